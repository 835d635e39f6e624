import Foundation

/// The state file on disk: read whole at start, replaced atomically on every save.
///
/// A save writes a temporary file beside the target, fsyncs it, renames it over the target and
/// fsyncs the directory (rename(2) is atomic; the directory fsync makes the rename itself
/// durable), so a crash at any moment leaves either the old file or the new one, never a mix.
public struct StateFile: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// Why the file could not be read or written, with the system's reason.
    public struct IOError: Error, CustomStringConvertible {
        public var description: String
    }

    /// The file's bytes, or nil when there is no file yet (a first start).
    public func read() throws(IOError) -> [UInt8]? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw IOError(description: "state file \(path) cannot be read")
        }
        return [UInt8](data)
    }

    /// The directory that holds the file and its temporary (`.` for a bare name).
    public var directory: String {
        let d = (path as NSString).deletingLastPathComponent
        return d.isEmpty ? "." : d
    }

    private var temporary: String { "\(path).tmp-\(getpid())" }

    /// Removes the temporary files of earlier saves that never reached their rename (the process
    /// was killed mid-save): each would otherwise stay forever, as large as the state. Only
    /// files named after this state file whose process is gone are removed, so a save in progress
    /// of another live process is left alone. Returns the names removed.
    @discardableResult
    public func removeLeftoverTemporaries() -> [String] {
        let prefix = (path as NSString).lastPathComponent + ".tmp-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        var removed: [String] = []
        for name in names where name.hasPrefix(prefix) {
            let digits = name.dropFirst(prefix.count)
            guard let pid = Int32(digits), !digits.isEmpty, digits.allSatisfy(\.isASCII) else { continue }
            // kill(pid, 0) probes without signalling: ESRCH means no such process (kill(2)).
            guard pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            let full = directory + "/" + name
            if unlink(full) == 0 { removed.append(full) }
        }
        return removed
    }

    /// Proves at start that saves can succeed: the directory exists, is a directory, and a
    /// temporary file can be created in it (and is removed again). Without this check a daemon
    /// with a mistyped path would run for hours and lose everything at its first save.
    public func checkWritable() throws(IOError) {
        var info = stat()
        guard stat(directory, &info) == 0 else {
            throw failure("state file \(path) cannot be saved: directory \(directory)")
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            throw IOError(description: "state file \(path) cannot be saved: \(directory) is not a directory")
        }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw failure("state file \(path) cannot be saved: cannot create a temporary file \(temporary)")
        }
        close(fd)
        unlink(temporary)
    }

    public func write(_ bytes: [UInt8]) throws(IOError) {
        let temporary = self.temporary
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw failure("cannot create \(temporary)") }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress! + offset, bytes.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                let e = failure("cannot write \(temporary)")
                close(fd)
                unlink(temporary)
                throw e
            }
            offset += n
        }
        guard fsync(fd) == 0 else {
            let e = failure("cannot fsync \(temporary)")
            close(fd)
            unlink(temporary)
            throw e
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let e = failure("cannot rename \(temporary) to \(path)")
            unlink(temporary)
            throw e
        }
        let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 {
            _ = fsync(dirFD)
            close(dirFD)
        }
    }

    /// Moves an unreadable file aside (`PATH.corrupt-UNIXTIME`) so that the daemon can start
    /// empty without destroying it; returns the new name.
    public func setAside(now: Double = Date().timeIntervalSince1970) throws(IOError) -> String {
        let target = "\(path).corrupt-\(Int(now))"
        guard rename(path, target) == 0 else { throw failure("cannot move \(path) to \(target)") }
        return target
    }

    private func failure(_ what: String) -> IOError {
        IOError(description: "\(what): \(String(cString: strerror(errno)))")
    }
}
