#if canImport(Glibc)
import Glibc
#endif

/// A value behind a mutex that can also be locked and unlocked apart from a closure, so that a
/// batch over thousands of layers takes their locks in a loop rather than one nested closure per
/// layer (which overflowed the stack at about 16,000 layers), and a reader can hold every
/// layer's lock at once to copy a consistent view.
///
/// `withLock` is the usual form. `lock()`/`unlock()` and `withLockHeld` are for callers that
/// take several locks in the registry's global order (ascending object identity) and must pair
/// them themselves. The lock is not recursive: locking it twice on one thread deadlocks.
///
/// `@unchecked Sendable`: the value is only reached with the mutex held.
final class LayerLock<Value: Sendable>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    /// Kept out of line: a stored class property would be checked for exclusive access at
    /// run time on every touch, which the mutex already guarantees.
    private let value: UnsafeMutablePointer<Value>

    init(_ initial: Value) {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        value = .allocate(capacity: 1)
        value.initialize(to: initial)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        value.deinitialize(count: 1)
        value.deallocate()
    }

    @inline(__always) func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) func unlock() { pthread_mutex_unlock(mutex) }

    /// Runs `body` on the value with the lock held.
    @inline(__always)
    func withLock<Result, E: Error>(_ body: (inout Value) throws(E) -> Result) throws(E) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value.pointee)
    }

    /// Runs `body` on the value; the caller holds the lock (taken with `lock()`).
    @inline(__always)
    func withLockHeld<Result>(_ body: (inout Value) -> Result) -> Result {
        body(&value.pointee)
    }
}
