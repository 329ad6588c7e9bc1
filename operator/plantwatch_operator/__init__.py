"""The Plantwatch operator: reconciles SensorNodes, AlertRules and DetectorModels into workloads."""
