//! Delivery guarantees that need no fault: a message that comes back after its alert was
//! delivered is not sent again (whether the alert was enriched twice, the destination's
//! consumer was reset, or the alert was replayed from the DLQ), and a body a destination cannot
//! take is dead-lettered with a reason that says so.

use std::time::Duration;

use alertsync_nats::async_nats::jetstream;
use alertsync_proto::{Message as _, v1};
use alertsync_standins::Reply;
use alertsync_tests::*;

/// Whether the enricher marked `message` as its alert's only `EnrichedAlert`.
fn is_marked_only(message: &jetstream::message::StreamMessage) -> bool {
    message
        .headers
        .get(alertsync_proto::protocol::FIRST_ENRICHMENT_HEADER)
        .is_some()
}

/// Waits until `consumer` has handled everything stored up to `sequence` of its stream.
async fn drained(consumer: &jetstream::consumer::PullConsumer, sequence: u64) -> bool {
    eventually(SOON, || {
        let mut c = consumer.clone();
        async move {
            let i = c.info().await.unwrap();
            i.num_pending == 0 && i.num_ack_pending == 0 && i.delivered.stream_sequence >= sequence
        }
    })
    .await
}

#[tokio::test]
async fn an_alert_whose_message_comes_back_after_delivery_is_not_sent_again() {
    // A short duplicate window: message ids stop recognising a repeat after a second.
    let p = Pipeline::start_with_nats(
        &destination("soar", "/soar", MAIN_TEMPLATE),
        "duplicate_window = \"1s\"",
    )
    .await;
    let s = p.subjects();
    let mut stream = p.js.get_stream(s.enriched_stream()).await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer(&s.destination_consumer("soar"))
        .await
        .unwrap();
    // Past the consumers' creation margin, the alert's only EnrichedAlert is marked as such and
    // its first delivery does not read the records: what follows must still never resend it.
    p.wait_until_alerts_can_be_marked().await;
    let uuid = p.send_alert("rule", "title").await;
    assert!(p.receiver.wait_until(SOON, |r| !r.is_empty()).await);

    // The delivery was recorded (destination + alert uuid) before the ack.
    let kv =
        p.js.get_key_value(s.delivery_records_bucket())
            .await
            .expect("the delivery-record bucket exists");
    let key = format!("soar.{uuid}");
    let recorded = eventually(SOON, || async { matches!(kv.get(&key).await, Ok(Some(_))) }).await;
    assert!(recorded, "a record for the delivered alert");
    let record = kv.get(&key).await.unwrap().unwrap();
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["status"], 200);
    let last = stream.info().await.unwrap().state.last_sequence;
    let original = stream.get_raw_message(last).await.unwrap();
    let enriched = v1::EnrichedAlert::decode(original.payload.as_ref()).unwrap();
    assert_eq!(enriched.created.as_ref().unwrap().alert_uuid, uuid);
    assert!(
        is_marked_only(&original),
        "the first EnrichedAlert is marked as the alert's only one"
    );

    // 1. The alert is enriched again after the duplicate window (as when the enricher crashed
    //    between its publish and its ack and came back late): a second EnrichedAlert is stored,
    //    and handed to the forwarder as a first delivery.
    let window_passed = std::time::SystemTime::from(original.time) + Duration::from_secs(2);
    assert!(
        eventually(SOON, || async move {
            std::time::SystemTime::now() > window_passed
        })
        .await
    );
    let created_again = v1::AlertNotification {
        alert_uuid: uuid.clone(),
        source: v1::Source::Webhook as i32,
        ..Default::default()
    };
    let created_stream = p.js.get_stream(s.created_stream()).await.unwrap();
    let enricher: jetstream::consumer::PullConsumer = created_stream
        .get_consumer(&s.enricher_consumer())
        .await
        .unwrap();
    let ack =
        p.js.publish(s.created(""), created_again.encode_to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    assert!(
        drained(&enricher, ack.sequence).await,
        "the enricher handled it"
    );
    let second = stream.info().await.unwrap().state.last_sequence;
    assert!(
        second > last,
        "the message id no longer matched: stored again"
    );
    assert!(
        !is_marked_only(&stream.get_raw_message(second).await.unwrap()),
        "a second EnrichedAlert (its AlertNotification was not on the alert's own subject) is not \
         marked as the only one"
    );
    assert!(
        drained(&consumer, second).await,
        "the second EnrichedAlert was handled"
    );

    // 2. The destination's consumer is deleted and created again (an operator resetting it):
    //    it hands out the stored message anew, as a first attempt, to the running forwarder.
    let config = consumer.info().await.unwrap().config.clone();
    stream
        .delete_consumer(&s.destination_consumer("soar"))
        .await
        .unwrap();
    let _: jetstream::consumer::Consumer<jetstream::consumer::Config> =
        stream.create_consumer(config).await.unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer(&s.destination_consumer("soar"))
        .await
        .unwrap();
    assert!(
        drained(&consumer, second).await,
        "the messages came back and were handled"
    );

    // 3. A DLQ replay of the delivered alert (a new message, on the replay subject).
    let mut headers = alertsync_nats::async_nats::HeaderMap::new();
    headers.insert(alertsync_proto::protocol::REPLAY_OF_HEADER, "1");
    let ack =
        p.js.publish_with_headers(s.replay_forward("soar"), headers, original.payload.clone())
            .await
            .unwrap()
            .await
            .unwrap();
    assert!(
        drained(&consumer, ack.sequence).await,
        "the replay was handled"
    );

    // The forwarder still delivers new alerts, once.
    let marker = p.send_alert("rule", "marker").await;
    assert!(p.wait_sent(&marker).await);
    let got = uuids_in(&p.receiver.requests(), "alert_short_id");
    assert_eq!(got, vec![uuid, marker], "each alert sent once only");
    assert!(p.dead_letters().await.is_empty());
    p.shutdown().await;
}

#[tokio::test]
async fn delivery_records_are_read_unless_the_alert_cannot_have_been_delivered_before() {
    let p = Pipeline::start(&destination("soar", "/soar", MAIN_TEMPLATE)).await;
    let s = p.subjects();
    // Every record read is a direct get whose subject ends with the record's key: count them.
    let bucket = s.delivery_records_bucket();
    let mut reads =
        p.js.client()
            .subscribe(format!("$JS.API.DIRECT.GET.KV_{bucket}.>"))
            .await
            .unwrap();

    // Sent at once: its messages are stored within the margin of their consumers' creation,
    // so they may be older than the consumers: the record is read.
    let early = p.send_alert("rule", "early").await;
    assert!(p.wait_sent(&early).await);
    p.wait_until_alerts_can_be_marked().await;
    // The first delivery of an alert's only EnrichedAlert: nothing to read.
    let first = p.send_alert("rule", "first").await;
    assert!(p.wait_sent(&first).await);
    // A first attempt that fails: the redelivery reads.
    p.receiver.script("/soar", vec![Reply::status(503)]);
    let retried = p.send_alert("rule", "retried").await;
    let attempts = |requests: &[alertsync_standins::Recorded], uuid: &str| {
        requests
            .iter()
            .filter(|r| r.json().is_some_and(|j| j["alert_short_id"] == uuid))
            .count()
    };
    assert!(
        p.receiver
            .wait_until(SOON, |r| attempts(r, &retried) == 2)
            .await,
        "the 503 was retried"
    );
    // A DLQ replay of a delivered alert: read, and not sent again.
    let stream = p.js.get_stream(s.enriched_stream()).await.unwrap();
    let last = stream.cached_info().state.last_sequence;
    let mut of_first = None;
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        let e = v1::EnrichedAlert::decode(m.payload.as_ref()).unwrap();
        if e.created.as_ref().unwrap().alert_uuid == first {
            of_first = Some(e);
        }
    }
    let of_first = of_first.expect("the first alert's EnrichedAlert");
    let replay = |e: v1::EnrichedAlert| {
        let mut headers = alertsync_nats::async_nats::HeaderMap::new();
        headers.insert(alertsync_proto::protocol::REPLAY_OF_HEADER, "1");
        p.js.publish_with_headers(s.replay_forward("soar"), headers, e.encode_to_vec().into())
    };
    replay(of_first.clone()).await.unwrap().await.unwrap();
    // Then a replay of an alert never delivered: its read comes after all the others on the
    // forwarder's connection, so once it is seen, every earlier read has been seen too.
    let sentinel = "5e471ae1-0000-4000-8000-000000000001".to_string();
    let mut other = of_first;
    other.created.as_mut().unwrap().alert_uuid = sentinel.clone();
    let body = String::from_utf8(other.alert_json.to_vec()).unwrap();
    other.alert_json = body.replace(&first, &sentinel).into();
    replay(other).await.unwrap().await.unwrap();

    let mut keys = Vec::new();
    let seen_sentinel = tokio::time::timeout(SOON, async {
        use futures::StreamExt as _;
        while let Some(m) = reads.next().await {
            let key = m.subject.rsplit('.').next().unwrap_or_default().to_string();
            keys.push(key.clone());
            if key == sentinel {
                return;
            }
        }
    })
    .await;
    assert!(
        seen_sentinel.is_ok(),
        "the sentinel's record was read: {keys:?}"
    );
    let reads_of = |uuid: &str| keys.iter().filter(|k| *k == uuid).count();
    assert_eq!(
        reads_of(&early),
        1,
        "read near the consumers' creation: {keys:?}"
    );
    assert_eq!(reads_of(&first), 1, "read only by its replay: {keys:?}");
    assert_eq!(
        reads_of(&retried),
        1,
        "read only by its redelivery: {keys:?}"
    );
    assert!(p.wait_sent(&sentinel).await);
    let sent = uuids_in(&p.receiver.requests(), "alert_short_id");
    let times = |uuid: &str| sent.iter().filter(|u| *u == uuid).count();
    assert_eq!(
        (
            times(&early),
            times(&first),
            times(&retried),
            times(&sentinel)
        ),
        (1, 1, 1, 1),
        "each alert delivered once; the replayed one not sent again"
    );
    assert_eq!(attempts(&p.receiver.requests(), &retried), 2);
    p.shutdown().await;
}

#[tokio::test]
async fn an_alert_published_again_after_the_created_stream_was_purged_is_not_sent_again() {
    // A short duplicate window: past it, only the stream's content says "already published".
    let mut p = Pipeline::start_with_nats(
        &destination("soar", "/soar", MAIN_TEMPLATE),
        "duplicate_window = \"1s\"",
    )
    .await;
    let s = p.subjects();
    p.wait_until_alerts_can_be_marked().await;
    let uuid = p.send_alert("rule", "title").await;
    assert!(p.wait_sent(&uuid).await);
    let window_passed = std::time::SystemTime::now() + Duration::from_secs(2);
    let mut enriched = p.js.get_stream(s.enriched_stream()).await.unwrap();
    let first = enriched.info().await.unwrap().state.last_sequence;
    assert!(
        is_marked_only(&enriched.get_raw_message(first).await.unwrap()),
        "delivered without a record read"
    );

    // An operator resets the created stream: the ingest no longer knows the alert was
    // published, and publishes it again when a source sees it again.
    p.js.get_stream(s.created_stream())
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    p.restart_enricher().await;
    assert!(
        eventually(SOON, || async move {
            std::time::SystemTime::now() > window_passed
        })
        .await
    );
    p.announce(&uuid).await;
    let second = eventually(SOON, || {
        let mut enriched = enriched.clone();
        async move { enriched.info().await.unwrap().state.last_sequence > first }
    })
    .await;
    assert!(second, "enriched again");
    let second = enriched.info().await.unwrap().state.last_sequence;
    assert!(
        !is_marked_only(&enriched.get_raw_message(second).await.unwrap()),
        "created before the stream's oldest message: not known to be the only enrichment"
    );
    let consumer: jetstream::consumer::PullConsumer = enriched
        .get_consumer(&s.destination_consumer("soar"))
        .await
        .unwrap();
    assert!(drained(&consumer, second).await, "the forwarder handled it");
    assert_eq!(
        uuids_in(&p.receiver.requests(), "alert_short_id"),
        vec![uuid],
        "its delivery record kept it from being sent again"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn a_created_stream_an_older_version_made_is_marked_from_the_next_start_on() {
    use alertsync_nats::Topology;
    use alertsync_nats::topology::ONE_PER_ALERT_SINCE;
    let p = Pipeline::start(&destination("soar", "/soar", MAIN_TEMPLATE)).await;
    let s = p.subjects();
    let topology = Topology::new(p.js.clone(), &p.config.nats);
    let mut stream = p.js.get_stream(s.created_stream()).await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    assert!(
        config.metadata.contains_key(ONE_PER_ALERT_SINCE),
        "marked when created"
    );

    // As a version that published on one subject per community left it.
    config.metadata.remove(ONE_PER_ALERT_SINCE);
    p.js.update_stream(config).await.unwrap();
    assert_eq!(
        topology.created_stream_complete_since().await.unwrap(),
        None,
        "unmarked: nothing is known to be its alert's only message"
    );
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    topology.ensure_streams().await.unwrap();
    let marked: u64 = stream.info().await.unwrap().config.metadata[ONE_PER_ALERT_SINCE]
        .parse()
        .unwrap();
    assert!(
        marked >= before,
        "marked from this start on: {marked} < {before}"
    );
    let since = topology
        .created_stream_complete_since()
        .await
        .unwrap()
        .expect("marked");
    assert!(since >= std::time::UNIX_EPOCH + Duration::from_secs(before));

    // A later start keeps the mark as it is.
    topology.ensure_streams().await.unwrap();
    let again = &stream.info().await.unwrap().config.metadata[ONE_PER_ALERT_SINCE];
    assert_eq!(again, &marked.to_string());
    p.shutdown().await;
}

#[tokio::test]
async fn a_413_is_dead_lettered_saying_the_body_is_too_large_for_the_destination() {
    let p = Pipeline::start(&destination("intake", "/intake", INTAKE_TEMPLATE)).await;
    p.receiver.always(
        "/intake",
        Reply::status(413).body(r#"{"message":"event too large"}"#),
    );
    let uuid = p.send_alert("rule", "title").await;
    let dl = p.wait_dead_letters(1, SOON).await;
    assert_eq!(dl.len(), 1);
    let d = &dl[0];
    assert_eq!(d.alert_uuid, uuid);
    assert_eq!(d.last_http_status, 413);
    assert_eq!(d.attempts, 1, "a 413 is not retried");
    assert!(d.reason.contains("body too large"), "{}", d.reason);
    assert!(d.reason.contains("max_body_bytes"), "{}", d.reason);
    assert!(d.reason.contains("event too large"), "{}", d.reason);
    assert!(!d.reason.contains(INTAKE_KEY));
    let retried = p
        .receiver
        .wait_until(Duration::from_secs(2), |r| r.len() > 1)
        .await;
    assert!(!retried, "a 413 must not be retried");
    p.shutdown().await;
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_dead_lettered_without_being_sent() {
    let dest = destination("intake", "/intake", INTAKE_TEMPLATE)
        .replace("timeout = \"5s\"", "timeout = \"5s\"\nmax_body_bytes = 300");
    let p = Pipeline::start(&dest).await;
    let uuid = p
        .send_alert(&"a very long rule name ".repeat(20), "title")
        .await;
    let dl = p.wait_dead_letters(1, SOON).await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].alert_uuid, uuid);
    assert!(
        dl[0]
            .reason
            .contains("over this destination's limit of 300 bytes"),
        "{}",
        dl[0].reason
    );
    assert!(p.receiver.requests().is_empty(), "nothing was sent");
    p.shutdown().await;
}
