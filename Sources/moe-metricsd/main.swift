print("moe-metricsd: not yet wired")
