//! `jobctl export --from D --to D`: submit a createExport job. The dates are passed
//! as given; the daemon validates them (`invalid_from_date`, `invalid_to_date`,
//! `invalid_date_range`).

use super::{upload, Ctx, Error, Outcome, SubmitOpts};

pub async fn run(ctx: &Ctx, from: &str, to: &str, opts: &SubmitOpts) -> Result<Outcome, Error> {
    let mut client = ctx.connect().await?;
    let job = client.submit_export(from, to, opts.rate).await?;
    upload::submitted(ctx, &mut client, job, opts).await
}
