#if canImport(Glibc)
import Glibc
#endif

/// The thread a confined object belongs to: what debug builds check at each entry point of an
/// event loop and of a protocol session, whose state takes no lock because one thread uses it.
///
/// The owner is the thread that claims it (`claim`, or the first `isCallingThreadOwner`); every
/// later call must come from that thread. Owners keep one in `#if DEBUG` storage and check it in
/// an `#if DEBUG` body, so release builds store and run nothing for it.
public struct ThreadOwner {
    private var thread: pthread_t?

    public init() {}

    /// Makes the calling thread the owner, whoever owned it before.
    public mutating func claim() {
        thread = pthread_self()
    }

    /// True when the calling thread is the owner; the first caller becomes the owner. Reports
    /// the verdict without trapping, for tests of the check itself.
    public mutating func isCallingThreadOwner() -> Bool {
        let me = pthread_self()
        guard let thread else {
            self.thread = me
            return true
        }
        return pthread_equal(thread, me) != 0
    }

    /// True when the calling thread has claimed the owner; false before any claim. A read only,
    /// so other threads may ask while the owner runs (a `mutating` check would be a write).
    public func isClaimedByCallingThread() -> Bool {
        guard let thread else { return false }
        return pthread_equal(thread, pthread_self()) != 0
    }

    /// Traps unless the calling thread has claimed the owner; a read only, as above.
    public func checkClaimed(_ what: StaticString, file: StaticString = #fileID, line: UInt = #line) {
        precondition(isClaimedByCallingThread(), "\(what) called off the thread that owns it", file: file, line: line)
    }

    /// Traps unless the calling thread is the owner (the first caller becomes it). `what` names
    /// the entry point in the message.
    public mutating func check(_ what: StaticString, file: StaticString = #fileID, line: UInt = #line) {
        precondition(isCallingThreadOwner(), "\(what) called off the thread that owns it", file: file, line: line)
    }
}
