import Dispatch
import SessionCore
import Synchronization
import Testing

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
            _ = onAnotherThread { probe.owner.check("second"); return 0 }
        }
    }
    #endif
}
