//! The event layer: `#[derive(Event)]`, envelopes and their metadata, the type-erased
//! `AnyEvent`, and decoding stored events by wire name through the `EventRegistry`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use projections::{
    AnyEvent, DecodeError, Envelope, Event, EventMetadata, EventRegistry, RegistryError,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// Declared with no `#[event(...)]` arguments: every default applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
struct CartOpened {
    cart: String,
}

/// Every argument overridden.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "order.placed", aggregate = "Order", version = 3)]
struct OrderPlaced {
    sku: String,
    quantity: u32,
}

/// Only the aggregate overridden.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(aggregate = "Order")]
struct OrderPaid {
    amount_cents: u64,
}

/// The same fields as [`OrderPlaced`] under another type and wire name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
struct OrderPlacedLookalike {
    sku: String,
    quantity: u32,
}

/// Two types claiming one wire name: the global registry of this test binary holds a
/// conflict on `"contested"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "contested")]
struct ClaimA {
    a: u32,
}

/// The second claimant of `"contested"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "contested")]
struct ClaimB {
    b: u32,
}

/// A type as it is today, after `gift_note` was added with `#[serde(default)]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "item.added", aggregate = "Cart")]
struct ItemAdded {
    sku: String,
    #[serde(default)]
    gift_note: String,
}

fn placed() -> Envelope<OrderPlaced> {
    Envelope::new(
        Uuid::new_v4(),
        OrderPlaced {
            sku: "SKU-1".into(),
            quantity: 2,
        },
    )
}

fn paid() -> Envelope<OrderPaid> {
    Envelope::new(Uuid::new_v4(), OrderPaid { amount_cents: 1250 })
}

/// A time with nanoseconds, which envelopes keep to the microsecond.
fn precise_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 34, 56).unwrap()
        + chrono::Duration::nanoseconds(123_456_789)
}

/// An envelope with every optional field set and every field away from its default.
fn fully_populated() -> Envelope<OrderPlaced> {
    let cause = paid();
    let mut envelope = placed()
        .with_causation(&cause)
        .with_tenant(Uuid::new_v4())
        .with_actor("user-7")
        .with_aggregate_version(17)
        .with_occurred_at(precise_time())
        .with_metadata("source", "api")
        .with_metadata("attempt", 3)
        .with_metadata("nested", json!({ "ip": "10.0.0.1", "tags": ["a", "b"] }));
    // Above 2^53, so a position that went through a float would change.
    envelope.metadata.position = Some((1 << 53) + 1);
    envelope
}

fn metadata_for(event_type: &str) -> EventMetadata {
    let mut metadata = EventMetadata::new(event_type, 1, Uuid::new_v4(), "Order");
    metadata.position = Some(41);
    metadata
}

fn global() -> &'static EventRegistry {
    EventRegistry::global()
}

// --- #[derive(Event)] -------------------------------------------------------------------

#[test]
fn derive_defaults_wire_name_to_type_name_aggregate_to_empty_and_version_to_1() {
    assert_eq!(CartOpened::EVENT_TYPE, "CartOpened");
    assert_eq!(CartOpened::AGGREGATE_TYPE, "");
    assert_eq!(CartOpened::EVENT_VERSION, 1);
}

#[test]
fn derive_overrides_wire_name_aggregate_and_version() {
    assert_eq!(OrderPlaced::EVENT_TYPE, "order.placed");
    assert_eq!(OrderPlaced::AGGREGATE_TYPE, "Order");
    assert_eq!(OrderPlaced::EVENT_VERSION, 3);
}

#[test]
fn derive_with_only_aggregate_keeps_default_wire_name_and_version() {
    assert_eq!(OrderPaid::EVENT_TYPE, "OrderPaid");
    assert_eq!(OrderPaid::AGGREGATE_TYPE, "Order");
    assert_eq!(OrderPaid::EVENT_VERSION, 1);
}

// --- Envelope ---------------------------------------------------------------------------

#[test]
fn envelope_new_takes_event_type_version_and_aggregate_type_from_the_event_impl() {
    let envelope = placed();
    assert_eq!(envelope.metadata.event_type, OrderPlaced::EVENT_TYPE);
    assert_eq!(envelope.metadata.event_version, OrderPlaced::EVENT_VERSION);
    assert_eq!(
        envelope.metadata.aggregate_type,
        OrderPlaced::AGGREGATE_TYPE
    );

    let defaults = Envelope::new(Uuid::nil(), CartOpened { cart: "c".into() });
    assert_eq!(defaults.metadata.event_type, "CartOpened");
    assert_eq!(defaults.metadata.event_version, 1);
    assert_eq!(defaults.metadata.aggregate_type, "");
}

#[test]
fn envelope_new_gives_fresh_distinct_event_ids_and_correlation_ids() {
    let envelopes: Vec<_> = (0..100).map(|_| placed()).collect();
    let mut ids: Vec<Uuid> = envelopes.iter().map(|e| e.metadata.event_id).collect();
    ids.extend(envelopes.iter().map(|e| e.metadata.correlation_id));
    assert!(ids.iter().all(|id| !id.is_nil()));
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        count,
        "event and correlation ids must all differ"
    );
}

#[test]
fn envelope_new_is_on_the_given_aggregate_at_version_1_now_with_no_position_or_optional_metadata() {
    let aggregate = Uuid::new_v4();
    let before = Utc::now();
    let envelope = Envelope::new(
        aggregate,
        OrderPlaced {
            sku: "s".into(),
            quantity: 1,
        },
    );
    let after = Utc::now();
    assert_eq!(envelope.aggregate_id(), aggregate);
    assert_eq!(envelope.aggregate_version(), 1);
    assert_eq!(envelope.position(), None);
    assert!(before <= envelope.occurred_at() && envelope.occurred_at() <= after);
    let metadata = &envelope.metadata;
    assert_eq!(metadata.causation_id, None);
    assert_eq!(metadata.tenant_id, None);
    assert_eq!(metadata.actor_id, None);
    assert!(metadata.metadata.is_empty());
}

#[test]
fn with_causation_takes_the_cause_event_id_and_copies_its_correlation_id() {
    let cause = paid();
    let effect = placed().with_causation(&cause);
    assert_eq!(effect.metadata.causation_id, Some(cause.event_id()));
    assert_eq!(
        effect.metadata.correlation_id,
        cause.metadata.correlation_id
    );
    assert_ne!(effect.event_id(), cause.event_id());
}

#[test]
fn is_caused_by_holds_for_the_cause_only() {
    let cause = paid();
    let effect = placed().with_causation(&cause);
    let sibling = placed().with_causation(&cause);
    assert!(effect.is_caused_by(&cause));
    assert!(!effect.is_caused_by(&sibling));
    assert!(!cause.is_caused_by(&effect));
    assert!(!placed().is_caused_by(&cause));
}

#[test]
fn is_correlated_with_holds_along_a_causation_chain_and_not_between_unrelated_events() {
    let root = paid();
    let child = placed().with_causation(&root);
    let grandchild = paid().with_causation(&child);
    assert!(child.is_correlated_with(&root));
    assert!(grandchild.is_correlated_with(&root));
    assert!(root.is_correlated_with(&grandchild));
    assert!(!placed().is_correlated_with(&root));
}

#[test]
fn with_metadata_merges_entries_and_a_repeated_key_replaces_its_value() {
    let envelope = placed()
        .with_metadata("source", "api")
        .with_metadata("attempt", 1)
        .with_metadata("attempt", 2);
    let expected: BTreeMap<String, serde_json::Value> = [
        ("attempt".to_owned(), json!(2)),
        ("source".to_owned(), json!("api")),
    ]
    .into_iter()
    .collect();
    assert_eq!(envelope.metadata.metadata, expected);
}

#[test]
fn payload_fields_are_reachable_through_deref_and_metadata_through_accessors() {
    let aggregate = Uuid::new_v4();
    let mut envelope = Envelope::new(
        aggregate,
        OrderPlaced {
            sku: "SKU-9".into(),
            quantity: 4,
        },
    )
    .with_aggregate_version(5)
    .with_occurred_at(precise_time());
    envelope.metadata.position = Some(12);

    assert_eq!(envelope.sku, "SKU-9");
    assert_eq!(envelope.quantity, 4);
    assert_eq!(envelope.event_id(), envelope.metadata.event_id);
    assert_eq!(envelope.event_type(), "order.placed");
    assert_eq!(envelope.aggregate_id(), aggregate);
    assert_eq!(envelope.aggregate_version(), 5);
    // Kept to the microsecond, as every store keeps it.
    assert_eq!(envelope.occurred_at(), precise_time().trunc_subsecs(6));
    assert_eq!(envelope.position(), Some(12));
}

#[test]
fn every_field_of_an_envelope_round_trips_through_json() {
    let original = fully_populated();

    let text = serde_json::to_string(&original).unwrap();
    let from_text: Envelope<OrderPlaced> = serde_json::from_str(&text).unwrap();
    assert_eq!(from_text, original);

    let value = serde_json::to_value(&original).unwrap();
    let from_value: Envelope<OrderPlaced> = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(from_value, original);

    let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["metadata", "payload"]);
}

#[test]
fn every_field_of_event_metadata_round_trips_through_json() {
    let original = fully_populated().metadata;
    // Each optional field is really set, so the round trip covers it.
    assert!(original.tenant_id.is_some());
    assert!(original.actor_id.is_some());
    assert!(original.causation_id.is_some());
    assert!(original.position.is_some());
    assert_eq!(original.metadata.len(), 3);

    let value = serde_json::to_value(&original).unwrap();
    let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "actor_id",
            "aggregate_id",
            "aggregate_type",
            "aggregate_version",
            "causation_id",
            "correlation_id",
            "event_id",
            "event_type",
            "event_version",
            "metadata",
            "occurred_at",
            "position",
            "tenant_id",
        ]
    );
    let back: EventMetadata = serde_json::from_value(value).unwrap();
    assert_eq!(back, original);
    let back: EventMetadata =
        serde_json::from_str(&serde_json::to_string(&original).unwrap()).unwrap();
    assert_eq!(back, original);
}

// --- AnyEvent ---------------------------------------------------------------------------

#[test]
fn any_event_to_json_is_an_object_of_metadata_and_payload() {
    let envelope = fully_populated();
    let event = AnyEvent::new(envelope.clone());
    let value = event.to_json().unwrap();
    assert_eq!(
        value,
        json!({
            "metadata": serde_json::to_value(&envelope.metadata).unwrap(),
            "payload": { "sku": "SKU-1", "quantity": 2 },
        })
    );
    assert_eq!(event.payload_json().unwrap(), value["payload"]);
}

#[test]
fn any_event_to_json_decodes_back_to_the_same_event_through_the_registry() {
    let envelope = fully_populated();
    let value = AnyEvent::new(envelope.clone()).to_json().unwrap();
    let metadata: EventMetadata = serde_json::from_value(value["metadata"].clone()).unwrap();
    let decoded = global().decode(metadata, &value["payload"]).unwrap();
    assert_eq!(decoded.downcast::<OrderPlaced>(), Some(&envelope));
}

#[test]
fn any_event_downcast_succeeds_for_the_exact_type_only() {
    let envelope = placed();
    let event = AnyEvent::from(envelope.clone());
    assert_eq!(event.downcast::<OrderPlaced>(), Some(&envelope));
    assert!(event.is::<OrderPlaced>());
    // Same fields, other type.
    assert!(event.downcast::<OrderPlacedLookalike>().is_none());
    assert!(!event.is::<OrderPlacedLookalike>());
    assert!(event.downcast::<OrderPaid>().is_none());

    // Same wire name, other type.
    let claim = AnyEvent::new(Envelope::new(Uuid::nil(), ClaimA { a: 1 }));
    assert!(claim.downcast::<ClaimA>().is_some());
    assert!(claim.downcast::<ClaimB>().is_none());
}

#[test]
fn any_event_exposes_metadata_wire_name_id_position_and_payload_type_name() {
    let envelope = fully_populated();
    let event = AnyEvent::new(envelope.clone());
    assert_eq!(event.metadata(), &envelope.metadata);
    assert_eq!(event.event_type(), "order.placed");
    assert_eq!(event.event_id(), envelope.event_id());
    assert_eq!(event.position(), envelope.position());
    assert_eq!(
        event.payload_type_name(),
        std::any::type_name::<OrderPlaced>()
    );
}

#[test]
fn map_metadata_on_a_clone_does_not_affect_the_other_clones() {
    let original = AnyEvent::new(placed());
    let other = original.clone();
    let changed = original
        .clone()
        .map_metadata(|m| m.position = Some(99))
        .map_metadata(|m| {
            m.metadata.insert("replayed".into(), json!(true));
        });

    assert_eq!(changed.position(), Some(99));
    assert_eq!(changed.metadata().metadata["replayed"], json!(true));
    for untouched in [&original, &other] {
        assert_eq!(untouched.position(), None);
        assert!(untouched.metadata().metadata.is_empty());
    }
    // The payload and the type survive the copy.
    assert_eq!(changed.event_id(), original.event_id());
    assert_eq!(
        changed.downcast::<OrderPlaced>().map(|e| &e.payload),
        original.downcast::<OrderPlaced>().map(|e| &e.payload)
    );
}

#[test]
fn map_metadata_on_an_unshared_event_changes_it_and_keeps_its_type() {
    let event = AnyEvent::new(placed()).map_metadata(|m| m.position = Some(3));
    assert_eq!(event.position(), Some(3));
    assert_eq!(event.downcast::<OrderPlaced>().unwrap().position(), Some(3));
}

// --- The global registry ----------------------------------------------------------------

#[test]
fn global_registry_decodes_a_json_value_by_wire_name_without_manual_registration() {
    let metadata = metadata_for("order.placed");
    let event = global()
        .decode(metadata.clone(), &json!({ "sku": "SKU-2", "quantity": 5 }))
        .unwrap();
    let typed = event.downcast::<OrderPlaced>().unwrap();
    assert_eq!(
        typed.payload,
        OrderPlaced {
            sku: "SKU-2".into(),
            quantity: 5
        }
    );
    assert_eq!(typed.metadata, metadata);
}

#[test]
fn global_registry_decodes_a_json_string_by_wire_name_without_manual_registration() {
    let metadata = metadata_for("CartOpened");
    let event = global()
        .decode_str(metadata.clone(), r#"{"cart":"cart-1"}"#)
        .unwrap();
    let typed = event.downcast::<CartOpened>().unwrap();
    assert_eq!(typed.cart, "cart-1");
    assert_eq!(typed.metadata, metadata);
}

#[test]
fn global_registry_lists_every_derived_wire_name_sorted() {
    let registry = global();
    for name in ["CartOpened", "order.placed", "OrderPaid", "item.added"] {
        assert!(registry.contains(name), "{name} is not registered");
    }
    let names = registry.event_types();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
}

#[test]
fn unknown_wire_name_is_unknown_event_type_listing_the_known_names() {
    for result in [
        global().decode(metadata_for("order.vanished"), &json!({})),
        global().decode_str(metadata_for("order.vanished"), "{}"),
    ] {
        let error = result.unwrap_err();
        let message = error.to_string();
        let DecodeError::UnknownEventType {
            event_type, known, ..
        } = error
        else {
            panic!("expected UnknownEventType, got {error:?}");
        };
        assert_eq!(event_type, "order.vanished");
        assert!(message.contains("order.vanished"), "{message}");
        for name in ["CartOpened", "order.placed", "OrderPaid", "item.added"] {
            assert!(known.contains(&name), "{name} missing from {known:?}");
            assert!(message.contains(name), "{name} missing from: {message}");
        }
    }
}

#[test]
fn undecodable_payload_is_a_payload_error_naming_event_type_and_rust_type() {
    for result in [
        global().decode(metadata_for("order.placed"), &json!({ "sku": 5 })),
        global().decode(metadata_for("order.placed"), &json!({ "sku": "s" })),
        global().decode_str(metadata_for("order.placed"), "not json"),
    ] {
        let error = result.unwrap_err();
        let message = error.to_string();
        let DecodeError::Payload {
            event_type,
            type_name,
            ..
        } = &error
        else {
            panic!("expected Payload, got {error:?}");
        };
        assert_eq!(event_type, "order.placed");
        assert_eq!(*type_name, std::any::type_name::<OrderPlaced>());
        assert!(message.contains("order.placed"), "{message}");
        assert!(message.contains("OrderPlaced"), "{message}");
        assert!(
            std::error::Error::source(&error).is_some(),
            "serde's error is chained"
        );
    }
}

#[test]
fn global_registry_check_reports_the_two_types_claiming_one_wire_name() {
    let error = global().check().unwrap_err();
    assert_eq!(error.event_type, "contested");
    assert_eq!(
        error.types,
        [
            std::any::type_name::<ClaimA>(),
            std::any::type_name::<ClaimB>()
        ]
    );
    let message = error.to_string();
    assert!(message.contains("contested"), "{message}");
    assert!(
        message.contains("ClaimA") && message.contains("ClaimB"),
        "{message}"
    );
}

#[test]
fn global_registry_decode_of_a_contested_wire_name_is_ambiguous_not_a_panic() {
    assert!(!global().contains("contested"));
    for result in [
        global().decode(metadata_for("contested"), &json!({ "a": 1 })),
        global().decode_str(metadata_for("contested"), r#"{"b":2}"#),
    ] {
        match result {
            Err(DecodeError::Ambiguous(RegistryError {
                event_type, types, ..
            })) => {
                assert_eq!(event_type, "contested");
                assert_eq!(types.len(), 2);
            }
            other => panic!("expected Ambiguous, got {other:?}"),
        }
    }
}

#[test]
fn a_conflict_leaves_the_other_wire_names_decodable() {
    let event = global()
        .decode(metadata_for("OrderPaid"), &json!({ "amount_cents": 7 }))
        .unwrap();
    assert_eq!(event.downcast::<OrderPaid>().unwrap().amount_cents, 7);
}

// --- A registry built by hand -----------------------------------------------------------

#[test]
fn hand_built_registry_decodes_only_what_was_registered() {
    let mut registry = EventRegistry::new();
    assert!(registry.is_empty());
    registry.register::<OrderPlaced>().unwrap();
    assert_eq!(registry.event_types(), ["order.placed"]);
    assert!(
        registry
            .decode(
                metadata_for("order.placed"),
                &json!({ "sku": "s", "quantity": 1 })
            )
            .unwrap()
            .is::<OrderPlaced>()
    );
    let error = registry
        .decode(metadata_for("CartOpened"), &json!({ "cart": "c" }))
        .unwrap_err();
    assert!(
        matches!(&error, DecodeError::UnknownEventType { known, .. } if known == &["order.placed"]),
        "{error:?}"
    );
}

#[test]
fn registering_one_type_twice_is_harmless() {
    let mut registry = EventRegistry::new();
    registry.register::<OrderPlaced>().unwrap();
    registry.register::<OrderPlaced>().unwrap();
    assert_eq!(registry.len(), 1);
    registry.check().unwrap();
}

#[test]
fn hand_built_registry_second_type_under_a_taken_name_is_a_registry_error_naming_both() {
    let mut registry = EventRegistry::new();
    registry.register::<ClaimA>().unwrap();
    let error = registry.register::<ClaimB>().unwrap_err();
    assert_eq!(error.event_type, "contested");
    assert_eq!(
        error.types,
        [
            std::any::type_name::<ClaimA>(),
            std::any::type_name::<ClaimB>()
        ]
    );
    let message = error.to_string();
    assert!(
        message.contains("ClaimA") && message.contains("ClaimB"),
        "{message}"
    );
}

#[test]
fn registering_a_claimant_again_does_not_clear_a_conflict() {
    let mut registry = EventRegistry::new();
    registry.register::<ClaimA>().unwrap();
    let error = registry.register::<ClaimB>().unwrap_err();
    assert_eq!(registry.register::<ClaimA>().unwrap_err(), error);
    assert_eq!(registry.register::<ClaimB>().unwrap_err(), error);
    assert!(!registry.contains("contested"));
}

#[test]
fn hand_built_registry_decode_of_a_contested_name_is_ambiguous() {
    let mut registry = EventRegistry::new();
    registry.register::<ClaimA>().unwrap();
    let _conflict = registry.register::<ClaimB>().unwrap_err();
    assert!(!registry.contains("contested"));
    let error = registry
        .decode(metadata_for("contested"), &json!({ "a": 1 }))
        .unwrap_err();
    assert!(
        matches!(&error, DecodeError::Ambiguous(e) if e.event_type == "contested"),
        "{error:?}"
    );
    assert!(error.to_string().contains("ClaimA"), "{error}");
    let error = registry
        .decode_str(metadata_for("contested"), r#"{"a":1}"#)
        .unwrap_err();
    assert!(matches!(error, DecodeError::Ambiguous(_)), "{error:?}");
}

#[test]
fn hand_built_registry_check_fails_on_a_conflict_only() {
    let mut registry = EventRegistry::new();
    registry.register::<ClaimA>().unwrap();
    registry.register::<OrderPlaced>().unwrap();
    registry.check().unwrap();
    let _conflict = registry.register::<ClaimB>().unwrap_err();
    let error = registry.check().unwrap_err();
    assert_eq!(error.event_type, "contested");
    assert_eq!(error.types.len(), 2);
}

// --- Forward compatibility --------------------------------------------------------------

#[test]
fn stored_payload_with_an_unknown_field_still_decodes() {
    let stored = json!({ "sku": "SKU-3", "quantity": 1, "coupon": "NEWFIELD", "extra": [1, 2] });
    let event = global()
        .decode(metadata_for("order.placed"), &stored)
        .unwrap();
    assert_eq!(
        event.downcast::<OrderPlaced>().unwrap().payload,
        OrderPlaced {
            sku: "SKU-3".into(),
            quantity: 1
        }
    );
    let event = global()
        .decode_str(metadata_for("order.placed"), &stored.to_string())
        .unwrap();
    assert_eq!(event.downcast::<OrderPlaced>().unwrap().sku, "SKU-3");
}

#[test]
fn field_added_later_with_serde_default_decodes_old_payloads() {
    // Stored before `gift_note` existed.
    let old = json!({ "sku": "SKU-4" });
    let event = global().decode(metadata_for("item.added"), &old).unwrap();
    assert_eq!(
        event.downcast::<ItemAdded>().unwrap().payload,
        ItemAdded {
            sku: "SKU-4".into(),
            gift_note: String::new()
        }
    );
    let event = global()
        .decode_str(metadata_for("item.added"), r#"{"sku":"SKU-5"}"#)
        .unwrap();
    assert_eq!(event.downcast::<ItemAdded>().unwrap().gift_note, "");
    // And a new payload still carries it.
    let event = global()
        .decode(
            metadata_for("item.added"),
            &json!({ "sku": "SKU-6", "gift_note": "hi" }),
        )
        .unwrap();
    assert_eq!(event.downcast::<ItemAdded>().unwrap().gift_note, "hi");
}

// --- Types declared inside functions ----------------------------------------------------

/// An event type declared inside a function, as tests often do.
fn first_local_event() -> AnyEvent {
    #[derive(Debug, Clone, Serialize, Deserialize, Event)]
    #[event(name = "local.created")]
    struct LocalCreated {
        first: u32,
    }
    AnyEvent::new(Envelope::new(Uuid::nil(), LocalCreated { first: 1 }))
}

/// Another type of the same name and wire name, in another function of the same module.
fn second_local_event() -> AnyEvent {
    #[derive(Debug, Clone, Serialize, Deserialize, Event)]
    #[event(name = "local.created")]
    struct LocalCreated {
        second: String,
    }
    AnyEvent::new(Envelope::new(
        Uuid::nil(),
        LocalCreated { second: "2".into() },
    ))
}

#[test]
fn two_function_local_types_of_one_name_claiming_one_wire_name_are_a_conflict() {
    let (first, second) = (first_local_event(), second_local_event());
    assert!(!global().contains("local.created"));
    for payload in [json!({ "first": 1 }), json!({ "second": "2" })] {
        let result = global().decode(metadata_for("local.created"), &payload);
        assert!(
            matches!(&result, Err(DecodeError::Ambiguous(e)) if e.event_type == "local.created"),
            "{result:?}"
        );
    }
    // The report tells the two apart by their full paths.
    let Err(DecodeError::Ambiguous(conflict)) =
        global().decode(metadata_for("local.created"), &json!({}))
    else {
        panic!("expected Ambiguous");
    };
    assert_eq!(
        conflict.types,
        [first.payload_type_name(), second.payload_type_name()]
    );
    assert_ne!(conflict.types[0], conflict.types[1]);
}
