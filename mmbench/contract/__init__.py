"""The contract: what a component is and what the engine hands it. The bottom of the house.

Plugins subclass these classes (through `mmbench.api`); the core never names a concrete method, model or
dataset, and everything it knows about a component comes from the class attributes declared here. Nothing in
this package imports the engine, the data layer, the runner or the reports: they all build on it.

- `task`: `Task`, `ModalitySpec` and the modality kinds;
- `encoder`, `fusion`: `Encoder`; `Fusion` and `FusionOutput`;
- `batch`: `Batch`, `Inputs`, `ModelOutput` (what a forward pass hands the balancer);
- `model`: `Model`, the part of the engine's model a balancer may use;
- `context`: `TrainContext`, what every balancer hook receives;
- `balancer`: `Balancer` and `Requirements`;
- `hooks`: the pluggy hook specifications a plugin module implements;
- `errors`: `Incompatible`, `DataError`, `unknown_names`.
"""
