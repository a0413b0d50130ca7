//! Client quotas at the byte level: AlterClientQuotas and DescribeClientQuotas answers
//! (per-entry refusals, validate_only, filters, durability across a restart of the front
//! door), and a producer over its quota told its throttle time and then held, on a manual
//! clock so that "held" is an event (a sleep until exactly the throttle's end) rather than
//! a measured delay.

mod support;

use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse, alter_client_quotas_request, describe_client_quotas_request,
};
use support::*;
use wal::clock::ManualClock;

type Entity<'a> = &'a [(&'a str, Option<&'a str>)];

fn entry(entity: Entity<'_>, ops: &[(&str, f64, bool)]) -> alter_client_quotas_request::EntryData {
    alter_client_quotas_request::EntryData::default()
        .with_entity(
            entity
                .iter()
                .map(|(t, n)| {
                    alter_client_quotas_request::EntityData::default()
                        .with_entity_type(StrBytes::from_string(t.to_string()))
                        .with_entity_name(n.map(|n| StrBytes::from_string(n.to_string())))
                })
                .collect(),
        )
        .with_ops(
            ops.iter()
                .map(|(k, v, remove)| {
                    alter_client_quotas_request::OpData::default()
                        .with_key(StrBytes::from_string(k.to_string()))
                        .with_value(*v)
                        .with_remove(*remove)
                })
                .collect(),
        )
}

/// (error code, message) of each entry.
async fn alter(
    c: &mut Conn,
    entries: Vec<alter_client_quotas_request::EntryData>,
    validate_only: bool,
) -> Result<Vec<(i16, Option<String>)>> {
    let resp: AlterClientQuotasResponse = c
        .call(
            &AlterClientQuotasRequest::default()
                .with_entries(entries)
                .with_validate_only(validate_only),
            1,
        )
        .await?;
    Ok(resp
        .entries
        .iter()
        .map(|e| {
            (
                e.error_code,
                e.error_message.as_ref().map(|m| m.to_string()),
            )
        })
        .collect())
}

/// The entities a filter selects, each as "type=name|<default>,..." with its values, sorted.
async fn describe(
    c: &mut Conn,
    components: &[(&str, i8, Option<&str>)],
    strict: bool,
    version: i16,
) -> Result<std::result::Result<Vec<String>, (i16, String)>> {
    let req = DescribeClientQuotasRequest::default()
        .with_components(
            components
                .iter()
                .map(|(t, m, name)| {
                    describe_client_quotas_request::ComponentData::default()
                        .with_entity_type(StrBytes::from_string(t.to_string()))
                        .with_match_type(*m)
                        .with_match(name.map(|n| StrBytes::from_string(n.to_string())))
                })
                .collect(),
        )
        .with_strict(strict);
    let resp: DescribeClientQuotasResponse = c.call(&req, version).await?;
    if resp.error_code != 0 {
        assert!(resp.entries.is_none());
        return Ok(Err((
            resp.error_code,
            resp.error_message
                .map(|m| m.to_string())
                .unwrap_or_default(),
        )));
    }
    let mut out: Vec<String> = resp
        .entries
        .context("entries")?
        .iter()
        .map(|e| {
            let entity: Vec<String> = e
                .entity
                .iter()
                .map(|p| {
                    format!(
                        "{}={}",
                        p.entity_type.as_str(),
                        p.entity_name.as_deref().unwrap_or("<default>")
                    )
                })
                .collect();
            let values: Vec<String> = e
                .values
                .iter()
                .map(|v| format!("{}={}", v.key.as_str(), v.value))
                .collect();
            format!("{} {}", entity.join(","), values.join(","))
        })
        .collect();
    out.sort();
    Ok(Ok(out))
}

#[tokio::test]
async fn quotas_are_validated_altered_described_and_kept_across_a_restart() -> Result<()> {
    let mut h = Harness::start().await?;
    let mut c = h.connect().await?;
    let alice: Entity<'_> = &[("user", Some("alice"))];

    // validate_only answers as a real alteration would and writes nothing.
    let r = alter(
        &mut c,
        vec![entry(alice, &[("producer_byte_rate", 1024.0, false)])],
        true,
    )
    .await?;
    assert_eq!(r, vec![(0, None)]);
    assert_eq!(describe(&mut c, &[], false, 1).await?, Ok(vec![]));

    // Each entry is answered on its own; the refused ones change nothing.
    let r = alter(
        &mut c,
        vec![
            entry(alice, &[("producer_byte_rate", 1024.0, false)]),
            entry(&[("user", Some("bob"))], &[("nope", 1.0, false)]),
            entry(
                &[("ip", Some("127.0.0.1"))],
                &[("connection_creation_rate", 5.0, false)],
            ),
            entry(&[], &[("producer_byte_rate", 1.0, false)]),
            entry(
                &[("user", Some("carol"))],
                &[
                    ("producer_byte_rate", 1.0, false),
                    ("producer_byte_rate", 2.0, false),
                ],
            ),
            entry(
                &[("user", Some("dave"))],
                &[("producer_byte_rate", -5.0, false)],
            ),
            entry(
                &[("user", Some("erin"))],
                &[("request_percentage", 50.0, false)],
            ),
            entry(
                &[("group", Some("g"))],
                &[("producer_byte_rate", 1.0, false)],
            ),
        ],
        false,
    )
    .await?;
    let codes: Vec<i16> = r.iter().map(|(code, _)| *code).collect();
    assert_eq!(codes, vec![0, 42, 42, 42, 42, 42, 42, 42], "{r:?}");
    assert_eq!(
        r[1].1.as_deref(),
        Some("Invalid configuration key nope"),
        "{r:?}"
    );
    assert_eq!(r[3].1.as_deref(), Some("Invalid empty client quota entity"));
    assert_eq!(
        r[7].1.as_deref(),
        Some("Unhandled client quota entity type: group")
    );
    let r = alter(
        &mut c,
        vec![
            entry(&[("user", None)], &[("consumer_byte_rate", 2048.0, false)]),
            entry(
                &[("user", Some("alice")), ("client-id", Some("app"))],
                &[("producer_byte_rate", 512.0, false)],
            ),
            entry(
                &[("client-id", None)],
                &[("producer_byte_rate", 64.0, false)],
            ),
        ],
        false,
    )
    .await?;
    assert_eq!(r, vec![(0, None), (0, None), (0, None)]);

    let all = vec![
        "client-id=<default> producer_byte_rate=64".to_string(),
        "user=<default> consumer_byte_rate=2048".to_string(),
        "user=alice producer_byte_rate=1024".to_string(),
        "user=alice,client-id=app producer_byte_rate=512".to_string(),
    ];
    assert_eq!(describe(&mut c, &[], false, 1).await?, Ok(all.clone()));
    // v0 (not flexible) answers the same.
    assert_eq!(describe(&mut c, &[], false, 0).await?, Ok(all.clone()));
    // Exact, strict or not.
    assert_eq!(
        describe(&mut c, &[("user", 0, Some("alice"))], false, 1).await?,
        Ok(all[2..].to_vec())
    );
    assert_eq!(
        describe(&mut c, &[("user", 0, Some("alice"))], true, 1).await?,
        Ok(all[2..3].to_vec())
    );
    // The default; any name (the default included), strict.
    assert_eq!(
        describe(&mut c, &[("user", 1, None)], false, 1).await?,
        Ok(all[1..2].to_vec())
    );
    assert_eq!(
        describe(&mut c, &[("user", 2, None)], true, 1).await?,
        Ok(all[1..3].to_vec())
    );
    assert_eq!(
        describe(&mut c, &[("client-id", 2, None)], false, 1).await?,
        Ok(vec![all[0].clone(), all[3].clone()])
    );
    // Bad filters are refused as a whole.
    let refused = describe(&mut c, &[("group", 2, None)], false, 1).await?;
    assert_eq!(
        refused,
        Err((42, "Custom entity type 'group' not supported".into()))
    );
    assert_eq!(
        describe(&mut c, &[("user", 0, None)], false, 1)
            .await?
            .map_err(|(code, _)| code),
        Err(42)
    );

    // Removing a key; the entity goes with its last key.
    let r = alter(
        &mut c,
        vec![entry(
            &[("client-id", None)],
            &[("producer_byte_rate", 0.0, true)],
        )],
        false,
    )
    .await?;
    assert_eq!(r, vec![(0, None)]);

    // Durable: a restarted front door reads them back.
    h.restart_broker().await?;
    let mut c = h.connect().await?;
    assert_eq!(
        describe(&mut c, &[], false, 1).await?,
        Ok(all[1..].to_vec())
    );
    h.stop().await
}

#[tokio::test]
async fn a_producer_over_its_quota_is_told_its_throttle_time_and_held_that_long() -> Result<()> {
    let clock = ManualClock::new(1_700_000_000_000);
    let config = BrokerConfig::default().with_clock(clock.shared());
    let server = ServerConfig {
        clock: clock.shared(),
        ..ServerConfig::default()
    };
    let h = Harness::start_with(config, server).await?;
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "q", 1, &[]).await?, 0);
    // The harness's client id.
    let r = alter(
        &mut c,
        vec![entry(
            &[("client-id", Some("protocol-test"))],
            &[("producer_byte_rate", 1000.0, false)],
        )],
        false,
    )
    .await?;
    assert_eq!(r, vec![(0, None)]);

    // About 15 KB against 1000 B/s measured over 10 s: half again over the quota.
    let value = "x".repeat(1000);
    let values: Vec<&str> = (0..15).map(|_| value.as_str()).collect();
    let resp: ProduceResponse = c
        .call(&produce_req("q", 0, batch(&values, None), -1), 9)
        .await?;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    let throttle = resp.throttle_time_ms;
    assert!(throttle > 0, "{resp:?}");
    assert!(throttle <= 11_000);
    assert_eq!(
        h.broker
            .metrics()
            .produce_throttled
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // The next request waits, unread, until exactly the throttle time is over.
    let corr = c.send(&MetadataRequest::default(), 12).await?;
    let throttle = Duration::from_millis(throttle as u64);
    clock.wait_for_sleeper_of(throttle).await;
    clock.advance(throttle);
    let meta = c.read::<MetadataRequest>(12, corr).await?;
    assert_eq!(meta.brokers.len(), 1);

    // Produce v5 predates KIP-219: the response itself comes after the throttle time.
    let before = clock.sleepers();
    let corr = c
        .send(&produce_req("q", 0, batch(&values, None), -1), 5)
        .await?;
    // Its response waits on the clock (at most the 11 s window).
    clock.wait_for_sleepers(before + 1).await;
    clock.advance(Duration::from_millis(11_000));
    let old = c.read::<ProduceRequest>(5, corr).await?;
    assert!(old.throttle_time_ms > 0, "{old:?}");
    h.stop().await
}
