/// The hardware a plan is made for, in EPLB's terms: `replicas` physical expert slots per layer
/// spread evenly over `gpus` GPUs in `nodes` nodes, and the layer's experts in `groups` groups of
/// consecutive experts. EPLB's rule: hierarchical when `groups` is a multiple of `nodes` (whole
/// groups are packed onto nodes and every replica of an expert stays on its group's node), global
/// otherwise (one node, one group).
public struct PlanShape: Sendable, Equatable {
    public var replicas: Int
    public var gpus: Int
    public var nodes: Int
    public var groups: Int

    /// Most GPUs, and most replicas per layer, a plan may ask for.
    public static let maxGPUs = ExpertPlacement.maxRanks
    public static let maxReplicas = ExpertPlacement.maxSlots

    public init(replicas: Int, gpus: Int, nodes: Int = 1, groups: Int = 1) {
        self.replicas = replicas
        self.gpus = gpus
        self.nodes = nodes
        self.groups = groups
    }

    public var isHierarchical: Bool { groups > 0 && nodes > 0 && groups % nodes == 0 }

    /// The node and group counts the planner really uses: the global policy is the hierarchical
    /// one with one node and one group.
    var effective: (nodes: Int, groups: Int) { isHierarchical ? (nodes, groups) : (1, 1) }

    /// Checks the shape against layers of `experts` experts; the error names the rule.
    public func check(experts: Int) throws(PlacementError) {
        guard gpus >= 1, gpus <= Self.maxGPUs else {
            throw PlacementError("num_gpus must be between 1 and \(Self.maxGPUs), got \(gpus)", field: "num_gpus")
        }
        guard nodes >= 1, nodes <= gpus else {
            throw PlacementError("num_nodes must be between 1 and num_gpus (\(gpus)), got \(nodes)", field: "num_nodes")
        }
        guard groups >= 1 else {
            throw PlacementError("num_groups must be at least 1, got \(groups)", field: "num_groups")
        }
        guard replicas >= 1, replicas <= Self.maxReplicas else {
            throw PlacementError(
                "num_replicas must be between 1 and \(Self.maxReplicas), got \(replicas)", field: "num_replicas")
        }
        guard experts >= 1 else {
            throw PlacementError("a layer needs at least one expert to plan for", field: "layers")
        }
        guard gpus % nodes == 0 else {
            throw PlacementError(
                "num_gpus (\(gpus)) must be a multiple of num_nodes (\(nodes)): every node holds the same number of GPUs",
                field: "num_gpus")
        }
        guard replicas % gpus == 0 else {
            throw PlacementError(
                "num_replicas (\(replicas)) must be a multiple of num_gpus (\(gpus)): "
                    + "every GPU holds the same number of slots", field: "num_replicas")
        }
        guard replicas >= experts else {
            throw PlacementError(
                "num_replicas (\(replicas)) must be at least the number of experts (\(experts)): "
                    + "every expert needs a slot", field: "num_replicas")
        }
        if isHierarchical && groups > 1 {
            guard experts % groups == 0 else {
                throw PlacementError(
                    "the number of experts (\(experts)) must be a multiple of num_groups (\(groups)) "
                        + "with the hierarchical policy (num_groups a multiple of num_nodes): groups are equal",
                    field: "num_groups")
            }
        }
    }
}
