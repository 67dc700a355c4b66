//! The frame layer on arbitrary bytes: `decode::<Request>` and `decode::<Response>`
//! on the input as a body, and `read_frame` on the input as a stream (with the
//! default limit and a tiny one). Nothing may panic or abort (a huge inner length
//! must be an error, not an allocation); a body that decodes must encode again and
//! decode to the same encoding; a frame read is never longer than the limit.

#![no_main]

use jobd_protocol::frame::{decode, encode, read_frame, DEFAULT_MAX_FRAME};
use jobd_protocol::{Request, Response};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    static RT: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime"),
    );
}

fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    if let Ok(msg) = decode::<T>(data) {
        let frame = encode(&msg).expect("a decoded message encodes");
        let again: T = decode(&frame[4..]).expect("a re-encoded message decodes");
        // Compared as bytes: NaN rates are not equal to themselves.
        assert_eq!(
            encode(&again).expect("encode"),
            frame,
            "unstable round trip"
        );
        assert!(
            frame.len() - 4 <= data.len(),
            "the canonical form is longer than the input"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Request>(data);
    round_trip::<Response>(data);
    RT.with(|rt| {
        rt.borrow().block_on(async {
            for max in [DEFAULT_MAX_FRAME, 16] {
                let mut stream = data;
                while let Ok(Some(body)) = read_frame(&mut stream, max).await {
                    assert!(
                        body.len() <= max as usize,
                        "a frame above the limit was read"
                    );
                    let _ = decode::<Request>(&body);
                }
            }
        })
    });
});
