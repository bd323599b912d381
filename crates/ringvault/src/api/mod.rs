//! A node's HTTP API: the router, status and metrics (`http`), server mode's (`server`), who may call it (`auth`), its
//! bounded connections (`conns`), the objects (PAST), records and topics (Scribe) endpoints, and the
//! streaming body large objects move through.

pub mod auth;
pub mod conns;
pub mod http;
pub mod objects;
pub mod records;
pub mod server;
pub mod stream;
pub mod topics;
