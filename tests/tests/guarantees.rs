//! Delivery guarantees that need no fault: a message that comes back after its alert was
//! delivered is not sent again (whether the alert was enriched twice, the destination's
//! consumer was reset, or the alert was replayed from the DLQ), and a body a destination cannot
//! take is dead-lettered with a reason that says so.

use std::time::Duration;

use alertsync_jetstream::async_nats::jetstream;
use alertsync_proto::{Message as _, v1};
use alertsync_standins::Reply;
use alertsync_tests::*;

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
    let created_again = v1::AlertCreated {
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
    let mut headers = alertsync_jetstream::async_nats::HeaderMap::new();
    headers.insert(alertsync_jetstream::dlq::REPLAY_OF_HEADER, "1");
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
