//! mesh-agent library.
