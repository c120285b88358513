//! What a trigger reads: the search the server runs, and the per-message size cap.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_search_and_the_size_cap() {
    let stack = MailStack::start(None).unwrap();
    let mut big = mail("[ALERT] huge").to_vec();
    big.truncate(big.len() - 2);
    let big = String::from_utf8(big).unwrap().replace(
        "\r\n\r\nbody of [ALERT] huge",
        "\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee the dump\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=dump.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    ) + &"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n".repeat(3000)
        + "--b--\r\n";
    stack
        .seed(
            USER,
            "",
            &[
                &mail("[ALERT] small"),
                &mail("lunch"),
                big.as_bytes(),
                &mail("[ALERT] last"),
            ],
        )
        .unwrap();
    let ws = workspace(&stack, "INBOX");
    for (oversize, expect_runs) in [("skip", 2), ("without-attachments", 3)] {
        let wf = workflow(
            &ws,
            &format!(
                "    filter: {{ subject_contains: \"[ALERT]\" }}\n    max_size: 10KB\n    oversize: {oversize}\n"
            ),
            false,
        );
        ws.reset_store().unwrap();
        let (rt, _store) = ws.app(None, Audit::default()).unwrap();
        let audit_runner = Runner::new(&rt).unwrap();
        let report = flowmail::workflow::run_with(&audit_runner, &wf, RunOptions::default())
            .await
            .unwrap();
        assert_eq!(report.runs, expect_runs, "{oversize}: {:?}", report.lines);
        // The server searched: the non-matching message was never fetched.
        assert_eq!(report.scanned, 3, "{oversize}: {:?}", report.lines);
        let bodies: Vec<String> = ws
            .outbox()
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
            .collect();
        if oversize == "without-attachments" {
            assert!(
                bodies.iter().any(
                    |b| b.to_lowercase().contains("omitted=true") && b.contains("see the dump")
                ),
                "the big one ran with its text and without its attachment: {bodies:?}"
            );
        }
        if oversize == "skip" {
            assert!(
                report
                    .lines
                    .iter()
                    .any(|l| l.contains("over the size cap") && l.contains(&big.len().to_string())),
                "{:?}",
                report.lines
            );
        }
    }
}
