import Synchronization

/// The bytes that all connections of a server may hold at once for request bodies and pending
/// responses (`HTTPLimits.maxBufferedBytes`), shared by every session of every event loop.
///
/// Sessions take bytes as they arrive and give them back when the request has been answered, so
/// the budget follows what is really held, never what a client announced.
public final class BufferBudget: Sendable {
    private let held = Atomic<Int>(0)
    private let limitBytes: Atomic<Int>

    public init(limit: Int) {
        limitBytes = Atomic(limit)
    }

    /// The most bytes held at once; a reload changes it for the reservations that follow.
    public var limit: Int {
        get { limitBytes.load(ordering: .relaxed) }
        set { limitBytes.store(newValue, ordering: .relaxed) }
    }

    /// Bytes held now, by every session together.
    public var heldBytes: Int { held.load(ordering: .relaxed) }

    /// Takes `bytes`, or nothing and returns false when that would pass the limit.
    public func reserve(_ bytes: Int) -> Bool {
        let limit = limitBytes.load(ordering: .relaxed)
        var current = held.load(ordering: .relaxed)
        while true {
            let (next, overflow) = current.addingReportingOverflow(bytes)
            if overflow || next > limit { return false }
            let (exchanged, original) = held.compareExchange(
                expected: current, desired: next, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
    }

    /// Gives back bytes taken by `reserve`.
    public func release(_ bytes: Int) {
        held.subtract(bytes, ordering: .relaxed)
    }
}
