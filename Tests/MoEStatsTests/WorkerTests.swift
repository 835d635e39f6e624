import Foundation
import JSONOutput
import Testing

@testable import MoEStats

/// Which workers report to a layer and when: the table, its cap, the TTL split at an injected
/// time, the summary's `workers` object and the layer's idle check. No test reads a clock.
@Suite struct WorkerTests {
    static func from(_ worker: String?, _ counts: [UInt64] = [2, 1], layer: String = "L0") -> RoutingDecision {
        var d = decision(counts, layer: layer)
        d.worker = worker
        return d
    }

    static func registry(maxWorkers: Int? = nil) -> LayerRegistry {
        var c = StatsConfiguration()
        if let maxWorkers { c.maxWorkersPerLayer = maxWorkers }
        return LayerRegistry(configuration: c)
    }

    @Test func defaultCapIsBoundedAndPositive() {
        let c = StatsConfiguration()
        #expect(c.maxWorkersPerLayer == 4096)
    }

    @Test func tracksLastSeenAndDecisionsPerWorker() throws {
        let r = Self.registry()
        _ = try r.ingest([Self.from("rank-1"), Self.from("rank-0")], defaultLayer: nil, now: 100)
        _ = try r.ingest([Self.from("rank-1"), Self.from(nil)], defaultLayer: nil, now: 130.5)
        _ = try r.ingest([Self.from("rank-2", layer: "L1")], defaultLayer: nil, now: 140)
        let s = try #require(r.snapshot("L0"))
        #expect(
            s.workers == [
                WorkerActivity(worker: "rank-0", lastSeen: 100, decisions: 1),
                WorkerActivity(worker: "rank-1", lastSeen: 130.5, decisions: 2),
            ])
        #expect(s.untrackedWorkerDecisions == 0)
        #expect(s.totalRoutings == 4)
        // Per layer: rank-2 reported to L1 only.
        #expect(try #require(r.snapshot("L1")).workers.map(\.worker) == ["rank-2"])
    }

    @Test func workerFromTheDecoder() throws {
        let body =
            #"[{"layer":"L0","worker":7,"expert_capacities":[1,1],"total_tokens":2},"#
            + #"{"layer":"L0","worker":"host-β","expert_capacities":[2,0],"total_tokens":2}]"#
        let r = Self.registry()
        _ = try r.ingest(try decodeDecisions(body), defaultLayer: nil, now: 9)
        #expect(try #require(r.snapshot("L0")).workers.map(\.worker) == ["7", "host-β"])
    }

    @Test func capCountsOverflowInsteadOfGrowing() throws {
        let r = Self.registry(maxWorkers: 2)
        _ = try r.ingest([Self.from("a"), Self.from("b"), Self.from("c"), Self.from("c")], defaultLayer: nil, now: 1)
        _ = try r.ingest([Self.from("b"), Self.from("d")], defaultLayer: nil, now: 2)
        var s = try #require(r.snapshot("L0"))
        #expect(s.workers.map(\.worker) == ["a", "b"])
        #expect(s.workers.map(\.decisions) == [1, 2])
        #expect(s.workers[1].lastSeen == 2)  // known workers are still updated when the table is full
        #expect(s.untrackedWorkerDecisions == 3)
        // Lowering the cap removes nothing; raising it lets new workers in.
        var c = r.configuration
        c.maxWorkersPerLayer = 1
        r.update(configuration: c)
        _ = try r.ingest([Self.from("a")], defaultLayer: nil, now: 3)
        s = try #require(r.snapshot("L0"))
        #expect(s.workers.map(\.worker) == ["a", "b"])
        c.maxWorkersPerLayer = 3
        r.update(configuration: c)
        _ = try r.ingest([Self.from("e"), Self.from("f")], defaultLayer: nil, now: 4)
        s = try #require(r.snapshot("L0"))
        #expect(s.workers.map(\.worker) == ["a", "b", "e"])
        #expect(s.untrackedWorkerDecisions == 4)
    }

    @Test func capOfZeroTracksNobody() throws {
        let r = Self.registry(maxWorkers: 0)
        _ = try r.ingest([Self.from("a"), Self.from("b")], defaultLayer: nil, now: 1)
        let s = try #require(r.snapshot("L0"))
        #expect(s.workers.isEmpty)
        #expect(s.untrackedWorkerDecisions == 2)
    }

    @Test func manyWorkersStayWithinTheCap() throws {
        let r = Self.registry(maxWorkers: 100)
        for i in 0..<1000 {
            _ = try r.ingest([Self.from("w\(i)")], defaultLayer: nil, now: Double(i))
        }
        let s = try #require(r.snapshot("L0"))
        #expect(s.workers.count == 100)
        #expect(s.untrackedWorkerDecisions == 900)
        #expect(s.workers.map(\.worker) == s.workers.map(\.worker).sorted())
    }

    @Test func activeAndStaleAtAnInjectedTime() throws {
        let r = Self.registry()
        _ = try r.ingest([Self.from("old")], defaultLayer: nil, now: 1000)
        _ = try r.ingest([Self.from("edge")], defaultLayer: nil, now: 1030)
        _ = try r.ingest([Self.from("new")], defaultLayer: nil, now: 1059)
        let s = try #require(r.snapshot("L0"))
        // At 1060 with a 30 s TTL: "old" is 60 s silent (stale), "edge" exactly 30 s (still active).
        #expect(s.workerCounts(now: 1060, ttl: 30) == WorkerCounts(active: 2, stale: 1))
        #expect(s.workerCounts(now: 1060.001, ttl: 30) == WorkerCounts(active: 1, stale: 2))
        #expect(s.workerCounts(now: 5000, ttl: 30) == WorkerCounts(active: 0, stale: 3))
        #expect(s.workerCounts(now: 5000, ttl: nil) == WorkerCounts(active: 3, stale: 0))
        // A clock stepped back: ages are never negative, nobody is stale.
        #expect(s.workerCounts(now: 0, ttl: 0) == WorkerCounts(active: 3, stale: 0))
        #expect(s.workers[0].age(now: 0) == 0)
        // Time moves only when the caller says so: the same snapshot gives the same answer.
        #expect(s.workerCounts(now: 1060, ttl: 30) == s.workerCounts(now: 1060, ttl: 30))
    }

    @Test func summaryWorkersObject() throws {
        let r = Self.registry(maxWorkers: 2)
        _ = try r.ingest([Self.from("a"), Self.from("b")], defaultLayer: nil, now: 1_700_000_000)
        _ = try r.ingest([Self.from("b"), Self.from("c")], defaultLayer: nil, now: 1_700_000_090.5)
        let s = try #require(r.snapshot("L0"))

        let summary = s.summary(window: nil, now: 1_700_000_100, workerTTL: 60)
        #expect(summary.workers.active == 1 && summary.workers.stale == 1)
        var w = JSONWriter()
        summary.writeJSON(&w)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(w.bytes)) as? [String: Any])
        let workers = try #require(object["workers"] as? [String: Any])
        #expect(Set(workers.keys) == ["active", "stale", "ttl_seconds", "untracked_decisions", "list"])
        #expect(workers["active"] as? Int == 1)
        #expect(workers["stale"] as? Int == 1)
        #expect(workers["ttl_seconds"] as? Double == 60)
        #expect(workers["untracked_decisions"] as? Int == 1)
        let list = try #require(workers["list"] as? [[String: Any]])
        #expect(list.map { $0["worker"] as? String } == ["a", "b"])
        #expect(list.map { $0["last_seen"] as? Double } == [1_700_000_000, 1_700_000_090.5])
        #expect(list.map { $0["age_seconds"] as? Double } == [100, 9.5])
        #expect(list.map { $0["stale"] as? Bool } == [true, false])
        #expect(list.map { $0["decisions"] as? Int } == [1, 2])
        #expect(
            w.string.hasSuffix(
                #""workers":{"active":1,"stale":1,"ttl_seconds":60,"untracked_decisions":1,"list":[{"worker":"a","last_seen":1700000000,"age_seconds":100,"stale":true,"decisions":1},{"worker":"b","last_seen":1700000090.5,"age_seconds":9.5,"stale":false,"decisions":2}]}}"#
            ))

        // Without a time, ages are null and nobody is stale; without a TTL, nobody is stale.
        var plain = JSONWriter()
        s.summary(window: nil).writeJSON(&plain)
        #expect(
            plain.string.contains(
                #""workers":{"active":2,"stale":0,"ttl_seconds":null,"untracked_decisions":1,"list":[{"worker":"a","last_seen":1700000000,"age_seconds":null,"stale":false"#
            ))
        let noTTL = s.summary(window: nil, now: 1_800_000_000, workerTTL: nil).workers
        #expect(noTTL.active == 2 && noTTL.stale == 0 && noTTL.list.allSatisfy { !$0.stale })
        #expect(noTTL.list.map(\.ageSeconds) == [100_000_000, 99_999_909.5])
    }

    @Test func layerWithoutWorkersHasAnEmptyList() throws {
        let r = Self.registry()
        _ = try r.ingest([Self.from(nil)], defaultLayer: nil, now: 1)
        var w = JSONWriter()
        try #require(r.snapshot("L0")).summary(window: nil, now: 2, workerTTL: 10).writeJSON(&w)
        #expect(
            w.string.hasSuffix(#""workers":{"active":0,"stale":0,"ttl_seconds":10,"untracked_decisions":0,"list":[]}}"#)
        )
    }

    @Test func workerNamesAreBounded() {
        let r = Self.registry()
        for bad in ["", String(repeating: "é", count: 257)] {
            RegistryTests.expectError(.invalid, field: "worker", index: 1) {
                try r.ingest([Self.from("ok"), Self.from(bad)], defaultLayer: nil, now: 1)
            }
        }
        #expect(r.layerCount == 0)
        #expect((try? r.ingest([Self.from(String(repeating: "é", count: 256))], defaultLayer: nil, now: 1)) == 1)
    }

    @Test func resetForgetsWorkers() throws {
        let r = Self.registry()
        _ = try r.ingest([Self.from("a")], defaultLayer: nil, now: 1)
        r.reset("L0")
        _ = try r.ingest([Self.from("b")], defaultLayer: nil, now: 2)
        #expect(try #require(r.snapshot("L0")).workers.map(\.worker) == ["b"])
    }

    @Test func layerIdleAfterItsTTL() throws {
        let r = Self.registry()
        _ = try r.ingest([Self.from(nil)], defaultLayer: nil, now: 500)
        let s = try #require(r.snapshot("L0"))
        #expect(s.lastUpdated == 500)
        #expect(!s.isIdle(now: 560, ttl: 60))
        #expect(s.isIdle(now: 560.5, ttl: 60))
        _ = try r.ingest([Self.from(nil)], defaultLayer: nil, now: 600)
        #expect(try #require(r.snapshot("L0")).isIdle(now: 660.5, ttl: 60) == true)
        #expect(try #require(r.snapshot("L0")).isIdle(now: 620, ttl: 60) == false)
    }
}
