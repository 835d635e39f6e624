import MoEPlacement
import Testing

/// The placement model: rank and node loads for contiguous and replicated placements, the figures
/// derived from them, and every inconsistency refused with a message naming the rule.
@Suite struct PlacementModelTests {
    @Test func contiguousRankLoads() throws {
        let placement = try ExpertPlacement(ranks: 4, nodes: 2)
        try placement.check(experts: 8)
        let loads: [Double] = [1, 2, 3, 4, 5, 6, 7, 8]
        #expect(placement.rankLoads(loads) == [3, 7, 11, 15])
        let f = placement.figures(loads)
        #expect(f.nodeLoads == [10, 26])
        #expect(f.worstRank == 3)
        #expect(f.balancedness == 9.0 / 15.0)
        #expect(f.overload == 15.0 / 9.0)
        #expect(f.nodeBalancedness == 18.0 / 26.0)
    }

    @Test func replicasShareTheLoad() throws {
        // Expert 0 has two replicas (slots 0 and 3), on ranks 0 and 1.
        let placement = try ExpertPlacement(ranks: 2, physicalToLogical: [0, 1, 2, 0])
        try placement.check(experts: 3)
        #expect(placement.rankLoads([10, 4, 6]) == [5 + 4, 6 + 5])
        #expect(placement.figures([10, 4, 6]).worstRank == 1)
    }

    @Test func noLoadNoRatios() throws {
        let f = try ExpertPlacement(ranks: 2).figures([0, 0, 0, 0])
        #expect(f.balancedness == nil && f.overload == nil && f.worstRank == nil && f.nodeBalancedness == nil)
        #expect(f.rankLoads == [0, 0])
    }

    static func error(_ body: () throws -> Void) -> PlacementError? {
        do { try body() } catch { return error as? PlacementError }
        return nil
    }

    @Test func refusals() {
        #expect(Self.error { _ = try ExpertPlacement(ranks: 0) }?.field == "ranks")
        #expect(
            Self.error { _ = try ExpertPlacement(ranks: 6, nodes: 4) }?.message.contains("multiple of nodes") == true)
        #expect(
            Self.error { _ = try ExpertPlacement(ranks: 4, physicalToLogical: [0, 1, 2]) }?.message
                .contains("not a multiple of ranks") == true)
        #expect(
            Self.error { _ = try ExpertPlacement(ranks: 1, physicalToLogical: [0, -1]) }?.field == "physical_to_logical"
        )
        #expect(
            Self.error { try ExpertPlacement(ranks: 3).check(experts: 8) }?.message.contains("does not divide") == true)
        #expect(
            Self.error { try ExpertPlacement(ranks: 2, physicalToLogical: [0, 1, 2, 9]).check(experts: 4) }?.message
                .contains("out of range") == true)
        #expect(
            Self.error { try ExpertPlacement(ranks: 2, physicalToLogical: [0, 1, 1, 0]).check(experts: 3) }?.message
                == "expert 2 has no slot in physical_to_logical (every expert needs at least one)")
    }

    @Test func planShapeRules() {
        func field(_ shape: PlanShape, experts: Int) -> String? {
            Self.error { try shape.check(experts: experts) }?.field
        }
        #expect(field(PlanShape(replicas: 16, gpus: 8, nodes: 2, groups: 4), experts: 12) == nil)
        #expect(field(PlanShape(replicas: 15, gpus: 8, nodes: 2, groups: 4), experts: 12) == "num_replicas")
        #expect(field(PlanShape(replicas: 8, gpus: 8, nodes: 2, groups: 4), experts: 12) == "num_replicas")
        #expect(field(PlanShape(replicas: 18, gpus: 6, nodes: 4, groups: 4), experts: 12) == "num_gpus")
        #expect(field(PlanShape(replicas: 16, gpus: 8, nodes: 2, groups: 8), experts: 12) == "num_groups")
        #expect(field(PlanShape(replicas: 16, gpus: 0, nodes: 1, groups: 1), experts: 12) == "num_gpus")
        // Global policy (3 groups over 2 nodes): the group count need not divide the experts.
        #expect(field(PlanShape(replicas: 16, gpus: 8, nodes: 2, groups: 3), experts: 16) == nil)
        #expect(PlanShape(replicas: 16, gpus: 8, nodes: 2, groups: 3).isHierarchical == false)
    }
}
