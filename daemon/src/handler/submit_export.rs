//! `SubmitExport`: validate the range in the original service's order, then create the job.

use super::{check_rate, refuse, Context};
use crate::connection::{ConnError, Connection};
use crate::dates;
use crate::kinds::ExportRange;
use crate::registry::{Caller, Refusal, Submission, SubmitInput};
use jobd_protocol::{ErrorCode, JobKind, Response};

pub async fn handle(
    conn: &mut Connection,
    ctx: &Context,
    caller: &Caller,
    from: &str,
    to: &str,
    rate: Option<f64>,
) -> Result<(), ConnError> {
    let checked = validate(from, to).and_then(|range| Ok((range, check_rate(rate)?)));
    let (range, rate) = match checked {
        Ok(v) => v,
        Err(r) => return refuse(conn, r).await,
    };
    let sub = Submission {
        kind: JobKind::CreateExport,
        rate,
        input: SubmitInput::Range(range.to_input()),
        total: None,
    };
    match ctx.registry.submit(caller, sub).await {
        Ok(info) => conn.send(&Response::Job(info)).await,
        Err(r) => refuse(conn, r).await,
    }
}

/// `from` first, then `to`, then their order: the original's validation order.
fn validate(from: &str, to: &str) -> Result<ExportRange, Refusal> {
    let from_day = dates::parse(from).ok_or_else(|| {
        Refusal::new(
            ErrorCode::InvalidFromDate,
            format!("from {from:?} is not a YYYY-MM-DD date"),
        )
    })?;
    let to_day = dates::parse(to).ok_or_else(|| {
        Refusal::new(
            ErrorCode::InvalidToDate,
            format!("to {to:?} is not a YYYY-MM-DD date"),
        )
    })?;
    if from_day > to_day {
        return Err(Refusal::new(
            ErrorCode::InvalidDateRange,
            format!("from {from} is after to {to}"),
        ));
    }
    Ok(ExportRange {
        from: from_day,
        to: to_day,
    })
}
