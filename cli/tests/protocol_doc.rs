//! Keeps the byte dumps in `docs/PROTOCOL.md` honest: every dump shown there is
//! what the reference encoder produces for the message it describes.

use jobd_protocol::frame::encode;
use jobd_protocol::{
    ErrorCode, JobInfo, JobKind, JobState, Request, Response, RowError, UploadKind,
};
use serde::Serialize;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    std::fs::read_to_string(path).expect("docs/PROTOCOL.md is readable")
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn bytes(msg: &impl Serialize) -> Vec<u8> {
    encode(msg).expect("encodes")
}

fn frame(msg: &impl Serialize) -> String {
    hex(&bytes(msg))
}

/// The hex bytes at the start of each line of the first code block after `marker`
/// (annotated dumps: bytes first, then a comment).
fn annotated_block(doc: &str, marker: &str) -> String {
    let after = doc
        .split_once(marker)
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("marker {marker:?} not in the doc"));
    let block = after.split("```").nth(1).expect("a code block follows");
    let mut bytes = Vec::new();
    for line in block.lines() {
        for tok in line.split(' ') {
            if tok.len() == 2 && tok.chars().all(|c| c.is_ascii_hexdigit()) {
                bytes.push(tok.to_string());
            } else if !tok.is_empty() {
                break;
            }
        }
    }
    bytes.join(" ")
}

/// Same as `annotated_block`, for dumps laid out on one line with labels below.
fn one_line_block(doc: &str, marker: &str) -> String {
    let after = doc
        .split_once(marker)
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("marker {marker:?} not in the doc"));
    let block = after.split("```").nth(1).expect("a code block follows");
    let first = block.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    first
        .split_whitespace()
        .filter(|t| t.len() == 2 && t.chars().all(|c| c.is_ascii_hexdigit()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn annotated_dumps_match_the_encoder() {
    let doc = doc();
    let hello = Request::Hello {
        protocol_version: 2,
        client: "jobctl/0.1.0".into(),
    };
    assert_eq!(
        annotated_block(&doc, "client: \"jobctl/0.1.0\" }`** (19 bytes)"),
        frame(&hello)
    );
    let control = Request::Control {
        id: "alice-baselineCSV-1764197090-42".into(),
        action: "stop".into(),
    };
    assert_eq!(annotated_block(&doc, "(42 bytes):"), frame(&control));
    let job = Response::Job(JobInfo {
        id: "alice-bulkTeam-1764197090-7".into(),
        kind: JobKind::BulkTeam,
        state: JobState::Paused,
        owner: "alice".into(),
        owner_uid: 1000,
        processed: 250,
        failed: 1,
        total: Some(1000),
        created_at: 1_764_197_090_123,
        updated_at: 1_764_197_095_456,
        error: None,
        rate: Some(2.0),
        node: None,
    });
    assert_eq!(annotated_block(&doc, "(79 bytes):"), frame(&job));
    use jobd_protocol::metrics::{ControlTimes, Histogram, JobCount, UnitCount};
    use jobd_protocol::{Action, Metrics};
    let metrics = Response::Metrics(Metrics {
        jobs: vec![JobCount {
            kind: JobKind::BulkTeam,
            state: JobState::Running,
            count: 2,
        }],
        units: vec![UnitCount {
            kind: JobKind::BulkTeam,
            applied: 300,
            rejected: 1,
        }],
        controls: vec![ControlTimes {
            action: Action::Stop,
            seconds: Histogram {
                bounds: vec![0.5],
                counts: vec![3, 0],
                sum: 0.25,
            },
        }],
        commits: Histogram {
            bounds: vec![],
            counts: vec![7],
            sum: 0.5,
        },
    });
    assert_eq!(annotated_block(&doc, "(48 bytes):"), frame(&metrics));
}

#[test]
fn one_line_dumps_match_the_encoder() {
    let doc = doc();
    let cases: Vec<(&str, String)> = vec![
        (
            "(18 bytes):",
            frame(&Response::Welcome {
                protocol_version: 2,
                daemon_version: "0.1.0".into(),
                user: "alice".into(),
            }),
        ),
        (
            "(15 bytes):",
            frame(&Request::SubmitUpload {
                kind: UploadKind::BulkTeam,
                rate: Some(0.5),
            }),
        ),
        (
            "(22 bytes):",
            frame(&Request::Chunk {
                data: b"team,m1\nred,ann\n".to_vec(),
            }),
        ),
        (
            "rate: None }`**:",
            frame(&Request::SubmitExport {
                from: "2020-01-01".into(),
                to: "2020-01-31".into(),
                rate: None,
            }),
        ),
        (
            "(16 bytes):",
            frame(&Response::RowErrors(vec![RowError {
                row: 3,
                message: "bad date".into(),
            }])),
        ),
        (
            "message: \"no job x\" }`** (15 bytes):",
            frame(&Response::Error {
                code: ErrorCode::IdDoesntExist,
                message: "no job x".into(),
            }),
        ),
    ];
    for (marker, expected) in cases {
        assert_eq!(
            one_line_block(&doc, marker),
            expected,
            "dump after {marker:?}"
        );
    }
}

#[test]
fn inline_dumps_match_the_encoder() {
    let doc = doc();
    let inline = [
        frame(&Request::Ping),
        frame(&Response::Pong),
        frame(&Response::Ready),
        frame(&Request::End { bytes: 300 }),
        frame(&Request::End { bytes: 70_000 }),
        frame(&Request::End {
            bytes: 5_000_000_000,
        }),
        frame(&Request::Status { ids: vec![] }),
        frame(&Request::Status {
            ids: vec!["a".into(), "bc".into()],
        }),
        frame(&Request::Watch { id: "x".into() }),
        frame(&Request::Wait {
            ids: vec!["x".into()],
        }),
        frame(&Request::Output { id: "x".into() }),
        frame(&Request::Errors { id: "x".into() }),
        frame(&Request::Events),
        frame(&Request::Metrics),
        frame(&Request::ErrorsPage {
            id: "x".into(),
            after: 500,
            limit: 50,
        }),
        frame(&Request::Revert {
            id: "x".into(),
            dry_run: true,
        }),
        frame(&Request::PreviewTerminate { id: "x".into() }),
        frame(&Request::Prune {
            older_than_ms: 1000,
            states: vec![JobState::Failed, JobState::Reverted],
        }),
        frame(&Response::Pruned { count: 2 }),
        frame(&Response::Jobs(vec![])),
        frame(&Response::End { count: 2 }),
        frame(&Response::Chunk {
            data: b"date\n".to_vec(),
        }),
    ];
    // The doc may lay a dump out with extra spaces between the length and the body.
    let squeezed: String = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    for dump in inline {
        assert!(squeezed.contains(&dump), "the doc lacks the dump {dump}");
    }
}

#[test]
fn documented_indices_match_the_enums() {
    // Spot checks of the index tables: byte 4 (the first of the body) is the variant
    // index, and an `Error`'s code index follows it.
    assert_eq!(bytes(&Request::Errors { id: String::new() })[4], 11);
    let internal = bytes(&Response::Error {
        code: ErrorCode::Internal,
        message: String::new(),
    });
    assert_eq!(internal[4], 8, "Response::Error is index 8");
    assert_eq!(internal[5], 18, "ErrorCode::Internal is index 18");
    assert_eq!(bytes(&Request::Events)[4], 12);
    assert_eq!(bytes(&Request::Metrics)[4], 13);
    let page = Request::ErrorsPage {
        id: String::new(),
        after: 0,
        limit: 0,
    };
    assert_eq!(bytes(&page)[4], 14);
    let revert = Request::Revert {
        id: String::new(),
        dry_run: false,
    };
    assert_eq!(bytes(&revert)[4], 16, "Revert is request 16");
    let prune = Request::Prune {
        older_than_ms: 0,
        states: vec![JobState::Reverted],
    };
    assert_eq!(
        bytes(&prune)[4..],
        [18, 0, 1, 6],
        "Prune, JobState::Reverted is 6"
    );
    assert_eq!(bytes(&Response::Pruned { count: 0 })[4], 12);
    let refused = bytes(&Response::Error {
        code: ErrorCode::NotRevertible,
        message: String::new(),
    });
    assert_eq!(refused[5], 22, "ErrorCode::NotRevertible is index 22");
}
