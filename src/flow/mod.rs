//! Flows: the model, loading and validation of flow files, `{{var}}`
//! templates, and the interpreter that runs one flow instance per call or
//! chat.

pub mod interp;
pub mod load;
pub mod model;
pub mod nodes;
pub mod returns;
pub mod template;

pub use load::{load_dir, parse_flow, FlowSet};
pub use model::{Channel, Flow, Node, NodeKind};
