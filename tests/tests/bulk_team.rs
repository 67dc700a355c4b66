//! `bulkTeam` (jobctl bulk-team): exact teams and members, duplicate and empty team
//! names as row errors, stdin.

use jobd_tests::*;

fn team(row: u64, name: &str, members: &[&str]) -> TeamRow {
    TeamRow {
        row,
        name: name.to_string(),
        members: members.iter().map(|s| s.to_string()).collect(),
    }
}

fn bulk_team_completes_with_exact_teams(b: Backend) {
    let d = Daemon::start_on(b);
    let f = gen_teams(7, "alpha", 150, 5);
    let id = d.bulk_team(&f.bytes, None);
    let (user, kind, _, _) = parse_job_id(&id).unwrap_or_else(|| panic!("bad id {id}"));
    assert_eq!(
        (user.as_str(), kind.as_str()),
        (current_user().as_str(), "bulkTeam")
    );
    let s = d.wait_completed(&id);
    assert_counts(&s, 150, 0, Some(150));
    assert_eq!(s["kind"], "bulkTeam");
    assert_teams_exact(&d, &id, &f.teams);
    assert!(d.errors(&id).is_empty());
    wait_uploads_gone(&d);
}

fn duplicate_and_empty_team_names_are_row_errors(b: Backend) {
    let d = Daemon::start_on(b);
    let first = d.bulk_team(b"team,m1\nold,zz\n", None);
    d.wait_completed(&first);

    let input = concat!(
        "team,m1,m2\n",
        "red,ann,bob\n", // 1
        "blue,cid,\n",   // 2
        "red,dan,eve\n", // 3 duplicate in the same file
        " blue ,x,y\n",  // 4 duplicate after trimming
        ",zed,amy\n",    // 5 empty name
        "   ,q,r\n",     // 6 empty after trimming
        "green,,fay\n",  // 7
        "Red,gus,hal\n", // 8 names match exactly: not a duplicate of `red`
        "old,ian,jo\n",  // 9 exists from the first job
    )
    .as_bytes();
    let id = d.bulk_team(input, None);
    let s = d.wait_completed(&id);
    assert_counts(&s, 4, 5, Some(9));

    let errors = d.errors(&id);
    let rows: Vec<u64> = errors.iter().map(|(r, _)| *r).collect();
    // 3: `red` again; 4: ` blue ` is `blue` after trimming; 5, 6: empty names;
    // 9: `old` exists from the first job.
    assert_eq!(rows, vec![3, 4, 5, 6, 9], "error rows: {errors:?}");
    for (row, msg) in &errors {
        assert!(!msg.trim().is_empty(), "row {row} has an empty message");
    }
    assert_teams_exact(
        &d,
        &id,
        &[
            team(1, "red", &["ann", "bob"]),
            team(2, "blue", &["cid"]),
            team(7, "green", &["fay"]),
            team(8, "Red", &["gus", "hal"]),
        ],
    );
    assert_teams_exact(&d, &first, &[team(1, "old", &["zz"])]);
    assert_eq!(
        d.store().team_names(current_uid()),
        vec!["Red", "blue", "green", "old", "red"]
    );
}

fn bulk_team_from_stdin(b: Backend) {
    let d = Daemon::start_on(b);
    let f = gen_teams(8, "beta", 60, 4);
    let out = d.jobctl_stdin(&["-q", "bulk-team", "-"], &f.bytes).ok();
    let id = bare_id(&out);
    let s = d.wait_completed(&id);
    assert_counts(&s, 60, 0, Some(60));
    assert_teams_exact(&d, &id, &f.teams);
}

both_stores!(
    bulk_team_completes_with_exact_teams,
    duplicate_and_empty_team_names_are_row_errors,
    bulk_team_from_stdin,
);
