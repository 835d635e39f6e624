import MoEPlacement
import Testing

/// EPLB's rules, checked from the plan alone (not from how the planner built it): the slot count,
/// every expert at least once, replica counts that match the slots, and with the hierarchical
/// policy each group whole on one node with the node's share of groups.
func expectValid(
    _ plan: LayerPlan, loads: [Double], shape: PlanShape, sourceLocation: SourceLocation = #_sourceLocation
) {
    let experts = loads.count
    let map = plan.physicalToLogical
    #expect(map.count == shape.replicas, "slot count", sourceLocation: sourceLocation)
    #expect(plan.logicalCount.count == experts, "replica counts per expert", sourceLocation: sourceLocation)
    var seen = [Int](repeating: 0, count: experts)
    for e in map {
        guard e >= 0 && e < experts else {
            Issue.record("slot names expert \(e) of \(experts)", sourceLocation: sourceLocation)
            return
        }
        seen[e] += 1
    }
    #expect(seen == plan.logicalCount, "logical_count matches the slots", sourceLocation: sourceLocation)
    #expect(!seen.contains(0), "every expert has a slot", sourceLocation: sourceLocation)
    guard shape.isHierarchical && shape.nodes > 1 else { return }
    let slotsPerNode = shape.replicas / shape.nodes
    let groupSize = experts / shape.groups
    var nodeOfGroup = [Int?](repeating: nil, count: shape.groups)
    for (slot, e) in map.enumerated() {
        let node = slot / slotsPerNode, group = e / groupSize
        if let known = nodeOfGroup[group], known != node {
            Issue.record("group \(group) is on nodes \(known) and \(node)", sourceLocation: sourceLocation)
            return
        }
        nodeOfGroup[group] = node
    }
    for node in 0..<shape.nodes {
        #expect(
            nodeOfGroup.filter { $0 == node }.count == shape.groups / shape.nodes,
            "node \(node) holds its share of groups", sourceLocation: sourceLocation)
    }
}
