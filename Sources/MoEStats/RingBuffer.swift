/// A fixed-capacity history of doubles that overwrites its oldest sample.
///
/// Appending is O(1) and, once the buffer is full, allocation-free (removing the oldest sample from
/// the front of an array would be O(n) per sample), so recording under a layer's lock stays cheap.
struct RingBuffer: Sendable {
    private var storage: [Double]
    /// Where the next sample goes once the buffer is full (also the oldest sample's position).
    private var next = 0
    let capacity: Int

    init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        storage = []
        storage.reserveCapacity(capacity)
    }

    /// A buffer holding `samples` (oldest first), as a restored state file lists them; only the
    /// newest `capacity` are kept. `chronological()` of the result equals `samples`' tail.
    init(capacity: Int, restoring samples: [Double]) {
        self.init(capacity: capacity)
        for v in samples.suffix(capacity) { append(v) }
    }

    var count: Int { storage.count }

    mutating func append(_ value: Double) {
        if storage.count < capacity {
            storage.append(value)
        } else {
            storage[next] = value
        }
        next += 1
        if next == capacity { next = 0 }  // no division per sample
    }

    /// The newest sample.
    var last: Double? {
        if storage.isEmpty { return nil }
        return storage[(next + storage.count - 1) % storage.count]
    }

    /// The samples oldest first, in a new buffer: the copy must not share storage with the ring,
    /// or the next append would have to copy the ring (an allocation under the layer's lock).
    func chronological() -> [Double] {
        var out = [Double]()
        out.reserveCapacity(storage.count)
        if storage.count < capacity {
            out.append(contentsOf: storage)
        } else {
            out.append(contentsOf: storage[next...])
            out.append(contentsOf: storage[..<next])
        }
        return out
    }
}
