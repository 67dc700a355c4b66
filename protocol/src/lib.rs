//! The jobd wire protocol, shared by the daemon and every client.
//!
//! A connection carries frames (see [`frame`]): a 4-byte big-endian length and one
//! bincode-encoded message. Clients send [`Request`]s, the daemon answers with
//! [`Response`]s. `docs/PROTOCOL.md` in the repository is the full specification.

pub mod client;
pub mod duration;
pub mod error;
pub mod frame;
pub mod job;
pub mod message;
pub mod metrics;
pub mod node;
pub mod paths;
pub mod peer;

pub use client::{Client, ClientError};
pub use error::ErrorCode;
pub use frame::{FrameError, DEFAULT_MAX_FRAME};
pub use job::{Action, JobInfo, JobKind, JobState, RowError, UndoSummary, UploadKind};
pub use message::{Request, Response};
pub use metrics::Metrics;
pub use node::NodeInfo;

/// Version of the protocol spoken by this crate; `Hello` and `Welcome` carry it.
pub const PROTOCOL_VERSION: u32 = 3;

/// Size of the data carried by one `Chunk` frame when streaming files.
pub const CHUNK_SIZE: usize = 256 * 1024;
