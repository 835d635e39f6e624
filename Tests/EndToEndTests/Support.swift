import Foundation
import Synchronization
import TestTools
import Testing

/// Failures of the harness itself (a tool missing, a process that never got ready).
struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Finds an executable on the PATH; a missing tool fails the test loudly with what to install.
func tool(_ name: String) throws -> String {
    guard let path = ExternalTool.path(name) else { throw HarnessError(ExternalTool.missing(name)) }
    return path
}

/// The built `moe-metricsd`, next to the test bundle in the build products directory.
func daemonBinary() throws -> String {
    var dirs: [URL] = []
    let arg0 = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    dirs.append(arg0.deletingLastPathComponent())
    if let main = Bundle.main.executableURL { dirs.append(main.resolvingSymlinksInPath().deletingLastPathComponent()) }
    for bundle in Bundle.allBundles { dirs.append(bundle.bundleURL.deletingLastPathComponent()) }
    // A test bundle may be a directory (…/x.xctest/…); walk up a few levels.
    for dir in dirs {
        var d = dir
        for _ in 0..<4 {
            let candidate = d.appendingPathComponent("moe-metricsd").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            d = d.deletingLastPathComponent()
        }
    }
    throw HarnessError(
        "moe-metricsd was not found next to the test bundle (looked in \(dirs.map(\.path))); build it with swift build --build-tests"
    )
}

/// A fresh temporary directory, removed by the caller.
func temporaryDirectory(_ prefix: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// A child process whose output is collected line by line; `stop()` kills it (tests call it in
/// `defer`, so it runs on failure too).
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    private let output = Mutex<(lines: [String], partial: String, closed: Bool)>(([], "", false))
    private let condition = NSCondition()

    init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = pipe
        process.standardInput = FileHandle.nullDevice
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            self?.append(data)
            if data.isEmpty { handle.readabilityHandler = nil }
        }
        try process.run()
    }

    private func append(_ data: Data) {
        output.withLock { o in
            if data.isEmpty {
                if !o.partial.isEmpty { o.lines.append(o.partial); o.partial = "" }
                o.closed = true
                return
            }
            o.partial += String(decoding: data, as: UTF8.self)
            while let nl = o.partial.firstIndex(of: "\n") {
                o.lines.append(String(o.partial[..<nl]))
                o.partial = String(o.partial[o.partial.index(after: nl)...])
            }
        }
        condition.lock()
        condition.broadcast()
        condition.unlock()
    }

    var lines: [String] { output.withLock { $0.lines } }
    var log: String { lines.joined(separator: "\n") }

    /// Waits until a line satisfies `match` (returning its result), the output ends, or `timeout` passes.
    func waitForLine<T>(timeout: Double, _ match: (String) -> T?) -> T? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let (lines, closed) = output.withLock { ($0.lines, $0.closed) }
            for line in lines { if let r = match(line) { return r } }
            if closed || Date() >= deadline { return nil }
            condition.lock()
            _ = condition.wait(until: min(deadline, Date().addingTimeInterval(0.5)))
            condition.unlock()
        }
    }

    /// Waits for exit up to `timeout`; returns the status, or nil if still running.
    func waitForExit(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    func signal(_ sig: Int32) { if process.isRunning { kill(process.processIdentifier, sig) } }

    /// Kills the process if it still runs and reaps it.
    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
    }
}

/// Data filled in by another thread, read after that thread signalled.
final class DataBox: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    let done = DispatchSemaphore(value: 0)
    func fill(from handle: FileHandle) {
        let d = handle.readDataToEndOfFile()
        lock.lock(); data = d; lock.unlock()
        done.signal()
    }
    var value: Data { lock.lock(); defer { lock.unlock() }; return data }
}

/// Runs a command to completion; returns its exit status and output (stdout and stderr apart).
/// A command still running after `timeout` is killed and the call throws.
@discardableResult
func run(_ executable: String, _ arguments: [String], stdin: Data? = nil, timeout: Double = 60) throws
    -> (status: Int32, stdout: String, stderr: String)
{
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe(), err = Pipe(), input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = stdin == nil ? FileHandle.nullDevice : input
    try process.run()
    // Both pipes are drained on their own threads so that neither fills up and blocks the child.
    let outBox = DataBox(), errBox = DataBox()
    DispatchQueue.global().async { outBox.fill(from: out.fileHandleForReading) }
    DispatchQueue.global().async { errBox.fill(from: err.fileHandleForReading) }
    if let stdin {
        input.fileHandleForWriting.write(stdin)
        try? input.fileHandleForWriting.close()
    }
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(5_000) }
    if process.isRunning {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        throw HarnessError("\(executable) \(arguments) did not finish within \(timeout) s")
    }
    process.waitUntilExit()
    _ = outBox.done.wait(timeout: .now() + 10)
    _ = errBox.done.wait(timeout: .now() + 10)
    return (
        process.terminationStatus, String(decoding: outBox.value, as: UTF8.self),
        String(decoding: errBox.value, as: UTF8.self)
    )
}

/// A free TCP port on 127.0.0.1, found by binding port 0 and closing (for Prometheus, which
/// cannot report the port it bound).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw HarnessError("socket() failed") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw HarnessError("bind() failed") }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// The daemon under test, started as a user would start it.
final class RunningDaemon: @unchecked Sendable {
    let child: ChildProcess
    let port: Int
    var base: String { "http://127.0.0.1:\(port)" }

    /// Starts `moe-metricsd --listen 127.0.0.1:0 ARGS` and reads the bound port from its
    /// "listening on" log line (the readiness signal; no sleeping). With a `launcher` (such as
    /// `prlimit --nofile=100:100`), the daemon is started through it.
    init(_ arguments: [String] = [], environment: [String: String]? = nil, launcher: [String] = []) throws {
        let binary = try daemonBinary()
        let command = launcher + [binary, "--listen", "127.0.0.1:0"] + arguments
        child = try ChildProcess(command[0], Array(command.dropFirst()), environment: environment)
        let found = child.waitForLine(timeout: 30) { line -> Int? in
            guard let r = line.range(of: "listening on 127.0.0.1:") else { return nil }
            return Int(line[r.upperBound...].prefix { $0.isNumber })
        }
        guard let found else {
            child.stop()
            throw HarnessError("moe-metricsd did not report a listening address; its output:\n\(child.log)")
        }
        port = found
    }

    func stop() { child.stop() }
}

/// curl's answer: status, headers (lower-cased names) and body.
struct CurlResponse {
    var status: Int
    var headers: [String: String]
    var body: String
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:] }
}

/// Runs curl once; `extra` are curl arguments (method, headers, data), the URL comes last.
func curl(_ url: String, _ extra: [String] = []) throws -> CurlResponse {
    let curlPath = try tool("curl")
    let dir = try temporaryDirectory("curl")
    defer { try? FileManager.default.removeItem(at: dir) }
    let headerFile = dir.appendingPathComponent("headers").path
    let bodyFile = dir.appendingPathComponent("body").path
    let r = try run(
        curlPath, ["-sS", "--max-time", "30", "-D", headerFile, "-o", bodyFile, "-w", "%{http_code}"] + extra + [url])
    guard r.status == 0, let status = Int(r.stdout) else {
        throw HarnessError("curl \(extra) \(url) failed (exit \(r.status)): \(r.stderr)")
    }
    var headers: [String: String] = [:]
    let headerText = (try? String(contentsOfFile: headerFile, encoding: .utf8)) ?? ""
    // With 100-continue there are two header blocks; keep the last.
    for block in headerText.components(separatedBy: "\r\n\r\n")
    where !block.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
        headers = [:]
        for line in block.components(separatedBy: "\r\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                in: .whitespaces)
        }
    }
    let body = (try? String(contentsOfFile: bodyFile, encoding: .utf8)) ?? ""
    return CurlResponse(status: status, headers: headers, body: body)
}
