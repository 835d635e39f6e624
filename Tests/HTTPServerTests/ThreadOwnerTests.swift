import Dispatch
import Foundation
import SessionCore
import Synchronization
import Testing

@testable import Transport

#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` on a thread of its own (not the caller's) and returns its result.
func onAnotherThread<T: Sendable>(_ body: @escaping @Sendable () -> T) -> T {
    let result = Mutex<T?>(nil)
    let done = DispatchSemaphore(value: 0)
    DispatchQueue(label: "another thread").async {
        let value = body()
        result.withLock { $0 = value }
        done.signal()
    }
    done.wait()
    return result.withLock { $0! }
}

/// The owner check that debug builds run at every entry point of an event loop and a session,
/// observed through its verdict rather than its trap.
@Suite struct ThreadOwnerTests {
    /// An owner and the verdicts of its check from the calling thread or from another one.
    final class Probe: @unchecked Sendable {
        // Touched by one thread at a time: `onAnotherThread` waits for the other thread.
        var owner = ThreadOwner()
        func here() -> Bool { owner.isCallingThreadOwner() }
        func elsewhere() -> Bool { onAnotherThread { self.here() } }
    }

    @Test func theFirstCallerOwnsAndAnotherThreadDoesNot() {
        let probe = Probe()
        let verdicts = [probe.here(), probe.here(), probe.elsewhere(), probe.here()]
        #expect(verdicts == [true, true, false, true])
    }

    @Test func aThreadThatClaimsBecomesTheOwner() {
        let probe = Probe()
        let before = [probe.elsewhere(), probe.here()]  // the other thread claims first
        probe.owner.claim()
        let after = [probe.here(), probe.elsewhere()]
        #expect(before == [true, false])
        #expect(after == [true, false])
    }

    #if DEBUG
    /// `check` traps off the owning thread.
    @Test func checkTrapsOffTheOwningThread() async {
        await #expect(processExitsWith: .failure) {
            let probe = Probe()
            probe.owner.check("first")
            _ = onAnotherThread {
                probe.owner.check("second"); return 0
            }
        }
    }
    #endif
}

#if DEBUG
/// An event loop knows its thread: the check its entry points make passes on the loop's own
/// thread (inside a session call) and fails on any other.
@Suite(.timeLimit(.minutes(1))) struct EventLoopThreadTests {
    final class Verdicts: Sendable {
        let inSession = Mutex<Bool?>(nil)
        let received = DispatchSemaphore(value: 0)
        let exited = DispatchSemaphore(value: 0)
    }

    /// Records the loop's verdict from inside `receive`, which the loop calls on its thread.
    final class ProbeSession: ConnectionSession {
        unowned let loop: EventLoop
        let verdicts: Verdicts
        init(loop: EventLoop, verdicts: Verdicts) {
            self.loop = loop
            self.verdicts = verdicts
        }
        func receive(_ bytes: UnsafeRawBufferPointer, now: UInt64, output: inout [UInt8]) -> SessionDisposition {
            let inLoop = loop.isInLoopThread()
            verdicts.inSession.withLock { $0 = inLoop }
            verdicts.received.signal()
            return .keepOpen
        }
        func peerClosed(now: UInt64, output: inout [UInt8]) -> SessionDisposition { .closeAfterWrite }
        var deadline: UInt64? { nil }
        func deadlineExpired(now: UInt64, output: inout [UInt8]) -> SessionDisposition { .closeAfterWrite }
        func beginShutdown(now: UInt64, output: inout [UInt8]) -> SessionDisposition { .closeAfterWrite }
        var isIdle: Bool { true }
    }

    @Test func theLoopThreadPassesAndAnotherFails() throws {
        let shared = TransportShared(maxConnections: 8, rejection: [], lingerSeconds: 0)
        let loop = try EventLoop(index: 0, shared: shared)
        let verdicts = Verdicts()
        Thread.detachNewThread {
            loop.run { [unowned loop] _ in ProbeSession(loop: loop, verdicts: verdicts) }
            verdicts.exited.signal()
        }
        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        loop.send(.adopt(fd: fds[0], reject: false))
        #expect(write(fds[1], "x", 1) == 1)
        verdicts.received.wait()
        #expect(verdicts.inSession.withLock { $0 } == true)
        #expect(loop.isInLoopThread() == false)
        close(fds[1])
        loop.send(.shutdown(deadline: 0))
        verdicts.exited.wait()
    }
}
#endif
