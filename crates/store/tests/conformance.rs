//! One storage conformance suite, run on SQLite and on PostgreSQL.
//!
//! Each scenario is an `async fn(Store)`; the `conformance!` macro at the end
//! runs each one on a fresh SQLite file and, when `GATEHOUSE_TEST_POSTGRES_URL`
//! is set, on a fresh PostgreSQL database.

use chrono::{DateTime, Duration, TimeZone, Utc};
use gatehouse_core::{AuthMethod, Device, Email, GroupsSource, IdpGroups, OrgId, Origin, SessionId, UserId};
use gatehouse_session::{MasterKey, MasterKeys, SigningAlgorithm, generate_signing_key};
use gatehouse_store::{
    AuditFilter, GroupState, HitOutcome, NewAuditEvent, NewSession, NewUser, OrgScope, OrgUpdate,
    RefreshOutcome, SignInKeys, SsoCode, SsoFlow, SsoPolicy, Store, StoreError, ThrottleRule, UserUpdate,
    UserWindow,
};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
}

fn new_user(org: OrgId, email: &str) -> NewUser {
    NewUser {
        email: Some(Email::parse(email).unwrap()),
        display_name: "Someone".into(),
        password_hash: Some("$argon2id$fake".into()),
        ..NewUser::member(org, Origin::Admin)
    }
}

async fn session_for(store: &Store, user: UserId, org: OrgId, refresh_hash: &str) -> SessionId {
    let session = NewSession {
        id: SessionId::new(),
        user_id: user,
        org_id: org,
        auth_method: AuthMethod::LocalPassword,
        device: Device { os: Some("iOS".into()), name: None, ip: Some("10.0.0.1".parse().unwrap()) },
        expires_at: t0() + Duration::days(30),
        idp_groups: None,
        browser_token_hash: None,
    };
    store.create_session(&session, refresh_hash, None, t0()).await.unwrap();
    session.id
}

async fn orgs_round_trip(store: Store) {
    let org = store.create_org("Acme", true, t0()).await.unwrap();
    assert_eq!(org.name, "Acme");
    assert!(org.enterprise_toolkit);
    assert_eq!(org.created_at, t0());
    assert_eq!(store.get_org(org.id).await.unwrap(), org);

    let later = t0() + Duration::seconds(5);
    let updated = store
        .update_org(org.id, &OrgUpdate { name: Some("Acme Corp".into()), enterprise_toolkit: None }, later)
        .await
        .unwrap();
    assert_eq!(updated.name, "Acme Corp");
    assert!(updated.enterprise_toolkit, "untouched field kept");
    assert_eq!(updated.updated_at, later);

    let second = store.create_org("Beta", false, t0()).await.unwrap();
    let all = store.list_orgs(None, 50).await.unwrap();
    assert_eq!(all.iter().map(|o| o.id).collect::<Vec<_>>(), vec![org.id, second.id]);
    assert_eq!(store.list_orgs(Some(org.id), 50).await.unwrap().len(), 1);

    store.delete_org(org.id).await.unwrap();
    assert!(matches!(store.get_org(org.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.delete_org(org.id).await, Err(StoreError::NotFound)));
    assert!(matches!(
        store.update_org(OrgId::new(), &OrgUpdate::default(), t0()).await,
        Err(StoreError::NotFound)
    ));
}

async fn users_are_unique_by_email_in_any_case(store: Store) {
    let a = store.create_org("A", false, t0()).await.unwrap();
    let b = store.create_org("B", false, t0()).await.unwrap();
    let alice = store.create_user(&new_user(a.id, "Alice@Example.com"), t0()).await.unwrap();
    assert!(alice.active);
    assert_eq!(alice.email.as_ref().unwrap().as_str(), "Alice@Example.com");

    // Unique across the whole platform, not per organization.
    let dup = store.create_user(&new_user(b.id, "alice@EXAMPLE.com"), t0()).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    let found = store.find_user_by_email(&Email::parse("ALICE@example.COM").unwrap()).await.unwrap();
    assert_eq!(found.map(|u| u.id), Some(alice.id));
    assert!(store.find_user_by_email(&Email::parse("nobody@example.com").unwrap()).await.unwrap().is_none());

    let unknown_org = store.create_user(&new_user(OrgId::new(), "x@example.com"), t0()).await;
    assert!(matches!(unknown_org, Err(StoreError::NotFound)));

    // Renaming onto someone else's email is a conflict too, and changes nothing.
    let bob = store.create_user(&new_user(a.id, "bob@example.com"), t0()).await.unwrap();
    let clash =
        UserUpdate { email: Some(Some(Email::parse("ALICE@example.com").unwrap())), ..Default::default() };
    assert!(matches!(store.update_user(bob.id, &clash, t0()).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.get_user(bob.id).await.unwrap().email.unwrap().as_str(), "bob@example.com");
}

async fn user_updates_apply_and_clear(store: Store) {
    let org = store.create_org("A", false, t0()).await.unwrap();
    let mut nu = new_user(org.id, "carol@example.com");
    nu.external_id = Some("ext-1".into());
    let carol = store.create_user(&nu, t0()).await.unwrap();
    assert_eq!(carol.external_id.as_deref(), Some("ext-1"));
    let by_ext = |v: &'static str| {
        let store = store.clone();
        async move {
            store
                .find_users_by_external_id(org.id, v)
                .await
                .unwrap()
                .into_iter()
                .map(|u| u.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(by_ext("EXT-1").await, vec![carol.id], "externalId lookups ignore case");
    let renamed = UserUpdate { external_id: Some(Some("Ext-2".into())), ..Default::default() };
    store.update_user(carol.id, &renamed, t0()).await.unwrap();
    assert_eq!((by_ext("ext-1").await, by_ext("ext-2").await), (vec![], vec![carol.id]));

    let update = UserUpdate {
        display_name: Some("Carol".into()),
        external_id: Some(None),
        password_hash: Some(None),
        ..Default::default()
    };
    let carol = store.update_user(carol.id, &update, t0()).await.unwrap();
    assert_eq!(carol.display_name, "Carol");
    assert_eq!(carol.external_id, None);
    assert_eq!(carol.password_hash, None);
    assert_eq!(carol.email.as_ref().unwrap().as_str(), "carol@example.com");

    let with_hash = UserUpdate { password_hash: Some(Some("$argon2id$new".into())), ..Default::default() };
    let carol = store.update_user(carol.id, &with_hash, t0()).await.unwrap();
    assert_eq!(carol.password_hash.as_deref(), Some("$argon2id$new"));
    assert_eq!(store.clear_org_password_hashes(org.id, t0()).await.unwrap(), 1);
    assert_eq!(store.get_user(carol.id).await.unwrap().password_hash, None);

    let mut idle = new_user(org.id, "idle@example.com");
    idle.active = false;
    let idle = store.create_user(&idle, t0()).await.unwrap();
    assert!(!idle.active);
    assert_eq!(store.get_user(idle.id).await.unwrap(), idle, "stored as returned: inactive, version 1");

    store.delete_user(carol.id).await.unwrap();
    assert!(matches!(store.get_user(carol.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.delete_user(carol.id).await, Err(StoreError::NotFound)));
}

async fn users_page_in_creation_order(store: Store) {
    let org = store.create_org("A", false, t0()).await.unwrap();
    let other = store.create_org("B", false, t0()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(store.create_user(&new_user(org.id, &format!("u{i}@example.com")), t0()).await.unwrap().id);
    }
    store.create_user(&new_user(other.id, "elsewhere@example.com"), t0()).await.unwrap();

    let first = store.list_users(org.id, None, 2).await.unwrap();
    assert_eq!(first.users.iter().map(|u| u.id).collect::<Vec<_>>(), ids[0..2]);
    let second = store.list_users(org.id, first.next, 2).await.unwrap();
    assert_eq!(second.users.iter().map(|u| u.id).collect::<Vec<_>>(), ids[2..4]);
    let last = store.list_users(org.id, second.next, 2).await.unwrap();
    assert_eq!(last.users.iter().map(|u| u.id).collect::<Vec<_>>(), ids[4..5]);
    assert_eq!(last.next, None);

    // By position, as SCIM pages.
    let at = |offset| UserWindow::Offset { offset, sort: None };
    let page = store.users_matching(org.id, None, at(2), 2).await.unwrap();
    assert_eq!((page.total, page.users.iter().map(|u| u.id).collect::<Vec<_>>()), (5, ids[2..4].to_vec()));
    assert!(store.users_matching(org.id, None, at(5), 2).await.unwrap().users.is_empty());
    // By keyset, as SCIM cursors page: the whole list once, in id order,
    // with the last page saying it is the last.
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let page = store.users_matching(org.id, None, UserWindow::After(after), 2).await.unwrap();
        assert_eq!(page.total, 5);
        walked.extend(page.users.iter().map(|u| u.id));
        if !page.more {
            break;
        }
        after = page.users.last().map(|u| u.id);
    }
    assert_eq!(walked, ids);
    let after_last = store.users_matching(org.id, None, UserWindow::After(Some(ids[4])), 2).await.unwrap();
    assert!(after_last.users.is_empty() && !after_last.more);
    assert_eq!(store.count_users(org.id).await.unwrap(), 5);
}

async fn refresh_tokens_rotate_once_and_reuse_revokes(store: Store) {
    let org = store.create_org("A", false, t0()).await.unwrap();
    let user = store.create_user(&new_user(org.id, "dave@example.com"), t0()).await.unwrap();
    let sid = session_for(&store, user.id, org.id, "hash-1").await;

    match store.rotate_refresh_token("hash-1", "hash-2", t0()).await.unwrap() {
        RefreshOutcome::Rotated { session, user: u, groups } => {
            assert_eq!(session.id, sid);
            assert!(groups.is_empty());
            assert_eq!(session.auth_method, AuthMethod::LocalPassword);
            // Read whole, as reading each alone reads them.
            assert_eq!(*u, user);
            assert_eq!(session, store.get_session(sid).await.unwrap());
        }
        other => panic!("expected rotation, got {other:?}"),
    }
    // The spent token is presented again: the whole session dies, including
    // the token that replaced it.
    assert!(matches!(
        store.rotate_refresh_token("hash-1", "hash-3", t0()).await.unwrap(),
        RefreshOutcome::Reused { session_id } if session_id == sid
    ));
    assert!(store.get_session(sid).await.unwrap().revoked_at.is_some());
    assert!(matches!(
        store.rotate_refresh_token("hash-2", "hash-4", t0()).await.unwrap(),
        RefreshOutcome::Invalid
    ));
    assert!(matches!(
        store.rotate_refresh_token("unknown", "hash-5", t0()).await.unwrap(),
        RefreshOutcome::Invalid
    ));
}

async fn concurrent_refreshes_have_one_winner(store: Store) {
    let org = store.create_org("A", false, t0()).await.unwrap();
    let user = store.create_user(&new_user(org.id, "erin@example.com"), t0()).await.unwrap();
    session_for(&store, user.id, org.id, "race").await;
    let attempts = (0..6).map(|i| {
        let store = store.clone();
        async move { store.rotate_refresh_token("race", &format!("next-{i}"), t0()).await }
    });
    let results = futures::future::join_all(attempts).await;
    let rotated = results.iter().filter(|r| matches!(r, Ok(RefreshOutcome::Rotated { .. }))).count();
    assert_eq!(rotated, 1, "exactly one concurrent refresh may win: {results:?}");
    for r in &results {
        assert!(
            matches!(
                r,
                Ok(RefreshOutcome::Rotated { .. } | RefreshOutcome::Reused { .. } | RefreshOutcome::Invalid)
            ),
            "{r:?}"
        );
    }
}

/// Rotations that arrive together share a transaction; each still gets the
/// outcome it would have had alone, and a reuse in the batch kills only its
/// own session.
async fn concurrent_rotations_keep_their_own_outcomes(store: Store) {
    let org = store.create_org("A", false, t0()).await.unwrap();
    let user = store.create_user(&new_user(org.id, "gail@example.com"), t0()).await.unwrap();
    let idle = store.create_user(&new_user(org.id, "hank@example.com"), t0()).await.unwrap();
    let mut live = Vec::new();
    for i in 0..12 {
        live.push(session_for(&store, user.id, org.id, &format!("live-{i}")).await);
    }
    let stolen = session_for(&store, user.id, org.id, "stolen-1").await;
    store.rotate_refresh_token("stolen-1", "stolen-2", t0()).await.unwrap();
    let inactive = session_for(&store, idle.id, org.id, "idle-1").await;
    let deactivate = UserUpdate { active: Some(false), ..Default::default() };
    store.update_user(idle.id, &deactivate, t0()).await.unwrap();
    let expired = session_for(&store, user.id, org.id, "old-1").await;
    let group = |name: &str, members: Vec<UserId>| GroupState {
        display_name: name.into(),
        external_id: None,
        scim_resource: None,
        members,
    };
    store.create_group(org.id, &group("Zeta", vec![user.id]), t0()).await.unwrap();
    store.create_group(org.id, &group("Alpha", vec![user.id, idle.id]), t0()).await.unwrap();

    let mut presented: Vec<(String, Option<SessionId>)> =
        (0..12).map(|i| (format!("live-{i}"), Some(live[i]))).collect();
    presented.push(("stolen-1".into(), None));
    presented.push(("idle-1".into(), None));
    presented.push(("nobody".into(), None));
    let late = t0() + Duration::days(31);
    let attempts = presented.iter().enumerate().map(|(i, (hash, _))| {
        let store = store.clone();
        async move { store.rotate_refresh_token(hash, &format!("new-{i}"), t0()).await }
    });
    let expired_attempt = store.rotate_refresh_token("old-1", "old-2", late);
    let (results, expired_result) = futures::join!(futures::future::join_all(attempts), expired_attempt);

    for ((hash, session), result) in presented.iter().zip(&results) {
        match (session, result) {
            (Some(sid), Ok(RefreshOutcome::Rotated { session, user: u, groups })) => {
                assert_eq!((session.id, u.id), (*sid, user.id), "{hash}");
                assert_eq!(groups, &["Alpha", "Zeta"], "{hash}");
            }
            (None, Ok(RefreshOutcome::Reused { session_id })) if hash == "stolen-1" => {
                assert_eq!(*session_id, stolen);
            }
            (None, Ok(RefreshOutcome::Invalid)) if hash != "stolen-1" => {}
            other => panic!("{hash}: {other:?}"),
        }
    }
    assert!(matches!(expired_result, Ok(RefreshOutcome::Invalid)), "{expired_result:?}");
    // Each winner's successor works, once; the reuse revoked only the
    // stolen session; the refused rotations spent nothing.
    for (i, sid) in live.iter().enumerate() {
        assert!(store.get_session(*sid).await.unwrap().revoked_at.is_none());
        assert!(matches!(
            store.rotate_refresh_token(&format!("new-{i}"), &format!("newer-{i}"), t0()).await.unwrap(),
            RefreshOutcome::Rotated { .. }
        ));
    }
    assert!(store.get_session(stolen).await.unwrap().revoked_at.is_some());
    assert!(store.get_session(inactive).await.unwrap().revoked_at.is_some());
    assert!(store.get_session(expired).await.unwrap().revoked_at.is_none());
    assert!(matches!(
        store.rotate_refresh_token("old-1", "old-3", t0()).await.unwrap(),
        RefreshOutcome::Rotated { .. }
    ));
}

async fn sessions_expire_and_die_with_their_user(store: Store) {
    let org = store.create_org("A", false, t0()).await.unwrap();
    let user = store.create_user(&new_user(org.id, "frank@example.com"), t0()).await.unwrap();
    let sid = session_for(&store, user.id, org.id, "f-1").await;
    let after_expiry = t0() + Duration::days(31);
    assert!(matches!(
        store.rotate_refresh_token("f-1", "f-2", after_expiry).await.unwrap(),
        RefreshOutcome::Invalid
    ));

    let sid2 = session_for(&store, user.id, org.id, "f-3").await;
    let deactivate = UserUpdate { active: Some(false), ..Default::default() };
    let frank = store.update_user(user.id, &deactivate, t0()).await.unwrap();
    assert!(!frank.active);
    for s in [sid, sid2] {
        assert!(
            store.get_session(s).await.unwrap().revoked_at.is_some(),
            "session {s} survived deactivation"
        );
    }
    assert!(matches!(store.rotate_refresh_token("f-3", "f-4", t0()).await.unwrap(), RefreshOutcome::Invalid));

    let reactivate = UserUpdate { active: Some(true), ..Default::default() };
    store.update_user(user.id, &reactivate, t0()).await.unwrap();
    let sid3 = session_for(&store, user.id, org.id, "f-5").await;
    store.delete_user(user.id).await.unwrap();
    assert!(matches!(store.get_session(sid3).await, Err(StoreError::NotFound)));
    assert!(matches!(store.rotate_refresh_token("f-5", "f-6", t0()).await.unwrap(), RefreshOutcome::Invalid));
}

async fn logout_revokes_the_session(store: Store) {
    let org = store.create_org("A", false, t0()).await.unwrap();
    let user = store.create_user(&new_user(org.id, "gina@example.com"), t0()).await.unwrap();
    let sid = session_for(&store, user.id, org.id, "g-1").await;
    assert!(store.revoke_by_refresh_token("g-1", t0()).await.unwrap());
    assert!(!store.revoke_by_refresh_token("g-1", t0()).await.unwrap(), "second logout finds nothing live");
    assert!(!store.revoke_by_refresh_token("nope", t0()).await.unwrap());
    assert!(!store.get_session(sid).await.unwrap().is_live(t0()));
    assert!(matches!(store.rotate_refresh_token("g-1", "g-2", t0()).await.unwrap(), RefreshOutcome::Invalid));
    // A token already spent by a rotation still names its session, and
    // ends that one alone.
    let rotated = session_for(&store, user.id, org.id, "g-3").await;
    let other = session_for(&store, user.id, org.id, "g-5").await;
    assert!(matches!(
        store.rotate_refresh_token("g-3", "g-4", t0()).await.unwrap(),
        RefreshOutcome::Rotated { .. }
    ));
    assert!(store.revoke_by_refresh_token("g-3", t0()).await.unwrap());
    assert!(!store.get_session(rotated).await.unwrap().is_live(t0()));
    assert!(store.get_session(other).await.unwrap().is_live(t0()));
}

async fn signing_keys_stay_published_until_retired_long_enough(store: Store) {
    let master = MasterKeys::single(MasterKey::generate());
    let k1 = generate_signing_key(SigningAlgorithm::Es256, &master).unwrap();
    let k2 = generate_signing_key(SigningAlgorithm::EdDsa, &master).unwrap();
    store.add_signing_key(&k1, t0()).await.unwrap();
    let rotated_at = t0() + Duration::hours(1);
    store.add_signing_key(&k2, rotated_at).await.unwrap();

    let keys = store.published_signing_keys(rotated_at - Duration::minutes(15)).await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        vec![k2.kid.as_str(), k1.kid.as_str()]
    );
    assert_eq!(keys[0].retired_at, None);
    assert_eq!(keys[1].retired_at, Some(rotated_at));
    assert_eq!(keys[0].sealed_private_key, k2.sealed_private_key);
    assert!(!keys[0].sealed_private_key.contains(&keys[0].public_jwk));

    // Once the retired key's tokens have all expired, it is no longer listed.
    let keys = store.published_signing_keys(rotated_at + Duration::seconds(1)).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid, k2.kid);
}

async fn admin_tokens_are_found_by_hash_until_revoked(store: Store) {
    let rec = store.create_admin_token("ops", "hash-a", t0()).await.unwrap();
    assert_eq!(store.find_admin_token("hash-a").await.unwrap(), Some(rec.clone()));
    assert_eq!(store.find_admin_token("hash-b").await.unwrap(), None);
    store.revoke_admin_token(&rec.id, t0()).await.unwrap();
    assert_eq!(store.find_admin_token("hash-a").await.unwrap(), None);
    assert!(matches!(store.revoke_admin_token(&rec.id, t0()).await, Err(StoreError::NotFound)));
}

async fn audit_events_list_newest_first(store: Store) {
    let org = store.create_org("A", false, t0()).await.unwrap();
    let other = store.create_org("B", false, t0()).await.unwrap();
    for (i, org_id) in [org.id, org.id, other.id, org.id].into_iter().enumerate() {
        let event = NewAuditEvent {
            org_id: Some(org_id),
            user_id: None,
            kind: "login",
            method: Some("password"),
            outcome: if i == 3 { "success" } else { "failure" },
            detail: Some(serde_json::json!({ "n": i })),
            device: Device { os: Some("Android".into()), name: Some("Pixel".into()), ip: None },
            actor: None,
        };
        store.record_audit_event(&event, t0() + Duration::seconds(i as i64)).await.unwrap();
    }
    let page = store.list_audit_events(&AuditFilter::org(org.id), None, 2).await.unwrap();
    let ns: Vec<_> = page.events.iter().map(|e| e.detail.as_ref().unwrap()["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, vec![3, 1]);
    assert_eq!(page.events[0].outcome, "success");
    assert_eq!(page.events[0].device_name.as_deref(), Some("Pixel"));
    let rest = store.list_audit_events(&AuditFilter::org(org.id), page.next.as_deref(), 2).await.unwrap();
    assert_eq!(rest.events.len(), 1);
    assert_eq!(rest.next, None);
}

async fn deleting_an_org_removes_its_users_and_sessions(store: Store) {
    let org = store.create_org("A", false, t0()).await.unwrap();
    let user = store.create_user(&new_user(org.id, "hank@example.com"), t0()).await.unwrap();
    session_for(&store, user.id, org.id, "h-1").await;
    store.delete_org(org.id).await.unwrap();
    assert!(matches!(store.get_user(user.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.rotate_refresh_token("h-1", "h-2", t0()).await.unwrap(), RefreshOutcome::Invalid));
    // The email is free again.
    let org2 = store.create_org("A2", false, t0()).await.unwrap();
    store.create_user(&new_user(org2.id, "hank@example.com"), t0()).await.unwrap();
}

async fn rest_auth_replaces_local_passwords(store: Store) {
    let org = store.create_org("A", false, t0()).await.unwrap();
    let other = store.create_org("B", false, t0()).await.unwrap();
    let u1 = store.create_user(&new_user(org.id, "ivy@example.com"), t0()).await.unwrap();
    let u2 = store.create_user(&new_user(other.id, "jay@example.com"), t0()).await.unwrap();
    assert_eq!(store.rest_auth(org.id).await.unwrap(), None);

    assert_eq!(store.enable_rest_auth(org.id, "sealed-1", t0()).await.unwrap(), 1);
    assert_eq!(store.rest_auth(org.id).await.unwrap().as_deref(), Some("sealed-1"));
    assert_eq!(store.get_user(u1.id).await.unwrap().password_hash, None, "hash erased with the switch");
    assert!(store.get_user(u2.id).await.unwrap().password_hash.is_some(), "other organizations untouched");

    // Replacing the configuration is an update, not a second row.
    assert_eq!(store.enable_rest_auth(org.id, "sealed-2", t0()).await.unwrap(), 0);
    assert_eq!(store.rest_auth(org.id).await.unwrap().as_deref(), Some("sealed-2"));
    assert!(matches!(store.enable_rest_auth(OrgId::new(), "x", t0()).await, Err(StoreError::NotFound)));
    let signing_in = |email: &str| {
        let store = store.clone();
        let email = Email::parse(email).unwrap();
        async move { store.find_user_for_login(&email, &[]).await.unwrap().account.unwrap() }
    };
    let ivy = signing_in("IVY@example.com").await;
    assert_eq!((ivy.user.id, ivy.rest_auth.as_deref()), (u1.id, Some("sealed-2")), "read with the user");
    assert_eq!(signing_in("jay@example.com").await.rest_auth, None, "not another organization's");

    store.disable_rest_auth(org.id).await.unwrap();
    assert_eq!(store.rest_auth(org.id).await.unwrap(), None);
    assert_eq!(signing_in("ivy@example.com").await.rest_auth, None);
    assert!(matches!(store.disable_rest_auth(org.id).await, Err(StoreError::NotFound)));

    store.enable_rest_auth(org.id, "sealed-3", t0()).await.unwrap();
    store.delete_org(org.id).await.unwrap();
    assert_eq!(store.rest_auth(org.id).await.unwrap(), None, "goes with its organization");
}

async fn scim_user_names_versions_and_tokens(store: Store) {
    let org = store.create_org("A", true, t0()).await.unwrap();
    let other = store.create_org("B", true, t0()).await.unwrap();
    let mut nu = new_user(org.id, "kim@example.com");
    nu.user_name = Some("Kim.Lee".into());
    nu.scim_resource = Some(r#"{"nickName":"K"}"#.into());
    let kim = store.create_user(&nu, t0()).await.unwrap();
    assert_eq!((kim.scim_user_name(), kim.version), ("Kim.Lee", 1));
    let plain = store.create_user(&new_user(org.id, "lee@example.com"), t0()).await.unwrap();
    assert_eq!(plain.scim_user_name(), "lee@example.com");

    // userName lookups: case-insensitive, per organization, falling back to the email.
    assert_eq!(store.find_user_by_user_name(org.id, "KIM.LEE").await.unwrap().map(|u| u.id), Some(kim.id));
    assert_eq!(
        store.find_user_by_user_name(org.id, "LEE@example.com").await.unwrap().map(|u| u.id),
        Some(plain.id)
    );
    assert_eq!(store.find_user_by_user_name(other.id, "kim.lee").await.unwrap(), None);
    assert_eq!(
        store.find_user_by_user_name(org.id, "kim@example.com").await.unwrap(),
        None,
        "has a userName of its own"
    );
    let mut dup = new_user(org.id, "kim2@example.com");
    dup.user_name = Some("KIM.LEE".into());
    assert!(matches!(store.create_user(&dup, t0()).await, Err(StoreError::Conflict(_))));
    // A userName equal to another user's email (its userName) is taken too.
    let mut clash = new_user(org.id, "kim3@example.com");
    clash.user_name = Some("Lee@Example.com".into());
    assert!(matches!(store.create_user(&clash, t0()).await, Err(StoreError::Conflict(_))));
    // When an email that serves as userName changes, the userName follows.
    let moved =
        UserUpdate { email: Some(Some(Email::parse("lee2@example.com").unwrap())), ..Default::default() };
    store.update_user(plain.id, &moved, t0()).await.unwrap();
    assert_eq!(
        store.find_user_by_user_name(org.id, "lee2@example.com").await.unwrap().map(|u| u.id),
        Some(plain.id)
    );
    assert_eq!(store.find_user_by_user_name(org.id, "lee@example.com").await.unwrap(), None);
    // Clearing an IdP userName falls back to the email.
    let cleared = UserUpdate { user_name: Some(None), ..Default::default() };
    store.update_user(kim.id, &cleared, t0()).await.unwrap();
    assert_eq!(
        store.find_user_by_user_name(org.id, "kim@example.com").await.unwrap().map(|u| u.id),
        Some(kim.id)
    );
    let restore = UserUpdate { user_name: Some(Some("Kim.Lee".into())), ..Default::default() };
    store.update_user(kim.id, &restore, t0()).await.unwrap();
    assert_eq!(store.count_users(org.id).await.unwrap(), 2);

    // Every change bumps the version; a stale expected version changes nothing.
    let current = store.get_user(kim.id).await.unwrap().version;
    assert_eq!(current, 3, "created, then two updates");
    let update = UserUpdate {
        display_name: Some("Kim".into()),
        expected_version: Some(current),
        ..Default::default()
    };
    let kim2 = store.update_user(kim.id, &update, t0()).await.unwrap();
    assert_eq!(kim2.version, current + 1);
    let stale = UserUpdate {
        display_name: Some("Stale".into()),
        expected_version: Some(current),
        ..Default::default()
    };
    assert!(matches!(store.update_user(kim.id, &stale, t0()).await, Err(StoreError::VersionMismatch)));
    assert_eq!(store.get_user(kim.id).await.unwrap().display_name, "Kim");

    let tok = store.create_scim_token(org.id, "okta", "okta", "h-1", t0()).await.unwrap();
    assert_eq!(store.find_scim_token("h-1").await.unwrap(), Some((tok.clone(), true)));
    assert_eq!(store.list_scim_tokens(org.id, 50).await.unwrap(), vec![tok.clone()]);
    assert!(matches!(store.revoke_scim_token(other.id, &tok.id, t0()).await, Err(StoreError::NotFound)));
    store.revoke_scim_token(org.id, &tok.id, t0()).await.unwrap();
    assert_eq!(store.find_scim_token("h-1").await.unwrap(), None);
    assert!(matches!(
        store.create_scim_token(OrgId::new(), "x", "generic", "h-2", t0()).await,
        Err(StoreError::NotFound)
    ));
}

async fn groups_keep_members_and_serialise_changes(store: Store) {
    let org = store.create_org("A", true, t0()).await.unwrap();
    let other = store.create_org("B", true, t0()).await.unwrap();
    let mut users = Vec::new();
    for i in 0..20 {
        users
            .push(store.create_user(&new_user(org.id, &format!("m{i}@example.com")), t0()).await.unwrap().id);
    }
    let outsider = store.create_user(&new_user(other.id, "out@example.com"), t0()).await.unwrap().id;
    let state = |name: &str, members: Vec<UserId>| GroupState {
        display_name: name.into(),
        external_id: None,
        scim_resource: None,
        members,
    };
    let eng = store.create_group(org.id, &state("Engineering", vec![users[0]]), t0()).await.unwrap();
    assert_eq!((eng.version, eng.members.len()), (1, 1));
    assert!(matches!(
        store.create_group(org.id, &state("ENGINEERING", vec![]), t0()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_group(org.id, &state("Mixed", vec![outsider]), t0()).await,
        Err(StoreError::UnknownReference(_))
    ));
    store.create_group(other.id, &state("Engineering", vec![]), t0()).await.unwrap();
    let found =
        store.find_group_by_display_name(org.id, "ENGINEERING").await.unwrap().expect("found in any case");
    assert_eq!((found.id.as_str(), found.members.len()), (eng.id.as_str(), 1));
    assert_eq!(store.find_group_by_display_name(org.id, "Nope").await.unwrap(), None);
    assert!(matches!(store.get_group(other.id, &eng.id).await, Err(StoreError::NotFound)));

    // Twenty concurrent additions, each reading and writing the whole set:
    // every one survives.
    let adds = users.iter().map(|u| {
        let (store, id, u) = (store.clone(), eng.id.clone(), *u);
        async move {
            store
                .modify_group(org.id, &id, t0(), |g| {
                    let mut members: Vec<UserId> = g.members.iter().map(|(m, _)| *m).collect();
                    members.push(u);
                    Ok::<_, StoreError>(GroupState {
                        display_name: g.display_name.clone(),
                        external_id: g.external_id.clone(),
                        scim_resource: g.scim_resource.clone(),
                        members,
                    })
                })
                .await
        }
    });
    for r in futures::future::join_all(adds).await {
        r.unwrap();
    }
    let eng = store.get_group(org.id, &eng.id).await.unwrap();
    assert_eq!(eng.members.len(), 20, "a concurrent change was lost");
    assert_eq!(eng.version, 21);
    assert_eq!(store.group_names_of(users[3]).await.unwrap(), vec!["Engineering".to_owned()]);
    store.create_group(org.id, &state("Alpha \"quoted\" ☃", vec![users[3]]), t0()).await.unwrap();
    let signing_in = store
        .find_user_for_login(&Email::parse("m3@example.com").unwrap(), &[])
        .await
        .unwrap()
        .account
        .unwrap();
    assert_eq!(
        signing_in.groups,
        vec!["Alpha \"quoted\" ☃".to_owned(), "Engineering".to_owned()],
        "read with the user for sign-in, as group_names_of has them"
    );
    assert_eq!(signing_in.groups, store.group_names_of(users[3]).await.unwrap());

    // A refused change changes nothing.
    let refused = store
        .modify_group(org.id, &eng.id, t0(), |_| Ok::<_, StoreError>(state("Renamed", vec![outsider])))
        .await;
    assert!(matches!(refused, Err(StoreError::UnknownReference(_))));
    assert_eq!(store.get_group(org.id, &eng.id).await.unwrap(), eng);

    store.delete_user(users[3]).await.unwrap();
    assert_eq!(
        store.get_group(org.id, &eng.id).await.unwrap().members.len(),
        19,
        "deleted users leave their groups"
    );
    assert_eq!(store.list_groups(org.id).await.unwrap().len(), 2);
    store.delete_group(org.id, &eng.id).await.unwrap();
    assert!(store.group_names_of(users[0]).await.unwrap().is_empty());
    assert!(matches!(store.delete_group(org.id, &eng.id).await, Err(StoreError::NotFound)));
}

async fn connections_round_trip(store: Store) {
    let org = store.create_org("A", true, t0()).await.unwrap();
    let other = store.create_org("B", true, t0()).await.unwrap();
    let record = gatehouse_store::ConnectionRecord {
        id: "c-1".into(),
        org_id: org.id,
        kind: "okta".into(),
        config: r#"{"kind":"okta"}"#.into(),
        client_secret_sealed: "v1.sealed".into(),
        created_at: t0(),
        updated_at: t0(),
    };
    store.create_connection(&record).await.unwrap();
    assert_eq!(store.get_connection(org.id, "c-1").await.unwrap(), record);
    assert!(matches!(store.get_connection(other.id, "c-1").await, Err(StoreError::NotFound)));
    assert_eq!(store.list_connections(org.id).await.unwrap(), vec![record.clone()]);
    let later = t0() + Duration::minutes(1);
    store.update_connection(org.id, "c-1", r#"{"kind":"okta","x":1}"#, "v1.other", later).await.unwrap();
    let updated = store.get_connection(org.id, "c-1").await.unwrap();
    assert_eq!((updated.client_secret_sealed.as_str(), updated.updated_at), ("v1.other", later));
    assert!(matches!(
        store.update_connection(other.id, "c-1", "{}", "x", later).await,
        Err(StoreError::NotFound)
    ));
    let orphan =
        gatehouse_store::ConnectionRecord { id: "c-2".into(), org_id: OrgId::new(), ..record.clone() };
    assert!(matches!(store.create_connection(&orphan).await, Err(StoreError::NotFound)));
    store.delete_connection(org.id, "c-1").await.unwrap();
    assert!(matches!(store.delete_connection(org.id, "c-1").await, Err(StoreError::NotFound)));
    store.create_connection(&record).await.unwrap();
    store.delete_org(org.id).await.unwrap();
    assert!(store.list_connections(org.id).await.unwrap().is_empty(), "goes with its organization");
}

fn connection(id: &str, org: OrgId) -> gatehouse_store::ConnectionRecord {
    gatehouse_store::ConnectionRecord {
        id: id.into(),
        org_id: org,
        kind: "okta".into(),
        config: "{}".into(),
        client_secret_sealed: "v1.sealed".into(),
        created_at: t0(),
        updated_at: t0(),
    }
}

async fn sso_policies_default_and_replace(store: Store) {
    let org = store.create_org("A", true, t0()).await.unwrap();
    assert_eq!(store.sso_policy(org.id).await.unwrap(), SsoPolicy::default());
    let policy = SsoPolicy {
        sso_required: true,
        redirect_urls: vec!["https://a.test/x".into(), "com.a.app:/cb".into()],
    };
    store.set_sso_policy(org.id, &policy, t0()).await.unwrap();
    assert_eq!(store.sso_policy(org.id).await.unwrap(), policy);
    let user = store.create_user(&new_user(org.id, "a@a.test"), t0()).await.unwrap();
    let email = Email::parse("A@a.test").unwrap();
    let login = |user: &gatehouse_core::User, sso_required| gatehouse_store::LoginAccount {
        user: user.clone(),
        sso_required,
        rest_auth: None,
        groups: vec![],
    };
    assert_eq!(store.find_user_for_login(&email, &[]).await.unwrap().account.unwrap(), login(&user, true));
    let other = store.create_org("B", true, t0()).await.unwrap();
    let outsider = store.create_user(&new_user(other.id, "b@b.test"), t0()).await.unwrap();
    let b = Email::parse("b@b.test").unwrap();
    assert_eq!(
        store.find_user_for_login(&b, &[]).await.unwrap().account.unwrap(),
        login(&outsider, false),
        "no policy, no SSO"
    );
    let relaxed = SsoPolicy { sso_required: false, redirect_urls: vec![] };
    store.set_sso_policy(org.id, &relaxed, t0()).await.unwrap();
    assert_eq!(store.sso_policy(org.id).await.unwrap(), relaxed);
    assert_eq!(store.find_user_for_login(&email, &[]).await.unwrap().account.unwrap(), login(&user, false));
    assert!(matches!(store.set_sso_policy(OrgId::new(), &policy, t0()).await, Err(StoreError::NotFound)));
}

async fn sso_flows_and_codes_work_once_and_expire(store: Store) {
    let org = store.create_org("A", true, t0()).await.unwrap();
    store.create_connection(&connection("c-1", org.id)).await.unwrap();
    let flow = SsoFlow { org_id: org.id, connection_id: "c-1".into(), sealed: "v1.flow".into() };
    let expires = t0() + Duration::minutes(10);
    store.create_sso_flow("state-1", &flow, expires, t0()).await.unwrap();
    store.create_sso_flow("state-2", &flow, expires, t0()).await.unwrap();
    assert_eq!(store.take_sso_flow("state-1", t0()).await.unwrap(), Some(flow.clone()));
    assert_eq!(store.take_sso_flow("state-1", t0()).await.unwrap(), None, "single use");
    assert_eq!(store.take_sso_flow("unknown", t0()).await.unwrap(), None);
    assert_eq!(store.take_sso_flow("state-2", expires).await.unwrap(), None, "expired");
    assert!(matches!(
        store
            .create_sso_flow("s", &SsoFlow { connection_id: "nope".into(), ..flow.clone() }, expires, t0())
            .await,
        Err(StoreError::NotFound)
    ));

    let user = store.create_user(&new_user(org.id, "a@a.test"), t0()).await.unwrap();
    let idp_groups = IdpGroups::asserted(GroupsSource::Both, &["Admins".into(), "Staff".into()], true);
    let code = SsoCode {
        user_id: user.id,
        code_challenge: "challenge".into(),
        method: AuthMethod::Saml,
        idp_groups: Some(idp_groups),
    };
    let until = t0() + Duration::minutes(2);
    store.create_sso_code("code-1", &code, until, t0()).await.unwrap();
    store.create_sso_code("code-2", &code, until, t0()).await.unwrap();
    assert_eq!(store.take_sso_code("code-1", t0()).await.unwrap(), Some(code.clone()));
    assert_eq!(store.take_sso_code("code-1", t0()).await.unwrap(), None, "single use");
    assert_eq!(store.take_sso_code("code-2", until).await.unwrap(), None, "expired");

    // SAML assertions are accepted once, until they expire.
    let until = t0() + Duration::minutes(5);
    assert!(store.first_use_of_assertion("c-1", "_a1", until, t0()).await.unwrap());
    assert!(!store.first_use_of_assertion("c-1", "_a1", until, t0()).await.unwrap(), "a replay");
    assert!(store.first_use_of_assertion("c-1", "_a2", until, t0()).await.unwrap());
    assert!(
        store.first_use_of_assertion("c-1", "_a1", until + Duration::minutes(1), until).await.unwrap(),
        "forgotten once expired"
    );

    // A flow goes with its connection.
    store.create_sso_flow("state-3", &flow, expires, t0()).await.unwrap();
    store.delete_connection(org.id, "c-1").await.unwrap();
    assert_eq!(store.take_sso_flow("state-3", t0()).await.unwrap(), None);
}

async fn identity_links_are_unique_and_created_with_their_user(store: Store) {
    let org = store.create_org("A", true, t0()).await.unwrap();
    store.create_connection(&connection("c-1", org.id)).await.unwrap();
    let audit = NewAuditEvent {
        org_id: Some(org.id),
        user_id: None,
        kind: "user_created",
        method: Some("oidc"),
        outcome: "success",
        detail: None,
        device: Device::default(),
        actor: None,
    };
    let user = store
        .create_linked_user(&new_user(org.id, "jit@a.test"), "c-1", "sub-1", &audit, t0())
        .await
        .unwrap();
    assert_eq!(store.linked_user("c-1", "sub-1").await.unwrap().map(|u| u.id), Some(user.id));
    assert_eq!(store.linked_user("c-1", "sub-2").await.unwrap(), None);
    let events = store.list_audit_events(&AuditFilter::org(org.id), None, 10).await.unwrap();
    assert_eq!(
        events.events.iter().filter(|e| e.user_id == Some(user.id)).count(),
        1,
        "audited with the user"
    );

    // Linking a taken subject, or creating a user whose email is taken,
    // changes nothing.
    let other = store.create_user(&new_user(org.id, "other@a.test"), t0()).await.unwrap();
    assert!(matches!(
        store.link_identity("c-1", "sub-1", other.id, t0()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_linked_user(&new_user(org.id, "other@a.test"), "c-1", "sub-3", &audit, t0()).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.linked_user("c-1", "sub-3").await.unwrap(), None, "no link without its user");
    assert!(matches!(
        store.create_linked_user(&new_user(org.id, "new@a.test"), "c-1", "sub-1", &audit, t0()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        store.find_user_by_email(&Email::parse("new@a.test").unwrap()).await.unwrap().is_none(),
        "no user without its link"
    );

    store.link_identity("c-1", "sub-4", other.id, t0()).await.unwrap();
    store.delete_user(other.id).await.unwrap();
    assert_eq!(store.linked_user("c-1", "sub-4").await.unwrap(), None, "links go with their user");
    store.delete_connection(org.id, "c-1").await.unwrap();
    store.create_connection(&connection("c-1", org.id)).await.unwrap();
    assert_eq!(store.linked_user("c-1", "sub-1").await.unwrap(), None, "and with their connection");
}

async fn concurrent_sessions_are_group_committed_and_failures_stay_apart(store: Store) {
    let org = store.create_org("A", false, t0()).await.unwrap();
    let user = store.create_user(&new_user(org.id, "gc@example.com"), t0()).await.unwrap();
    let ghost = UserId::new(); // no such user: its session breaks the foreign key
    let attempts = (0..41).map(|i| {
        let store = store.clone();
        let user_id = if i == 20 { ghost } else { user.id };
        async move {
            let session = NewSession {
                id: SessionId::new(),
                user_id,
                org_id: org.id,
                auth_method: AuthMethod::ExternalRest,
                device: Device::default(),
                expires_at: t0() + Duration::days(1),
                idp_groups: None,
                browser_token_hash: None,
            };
            let audit = NewAuditEvent {
                org_id: Some(org.id),
                user_id: Some(user_id),
                kind: "login",
                method: Some("external_rest"),
                outcome: "success",
                detail: None,
                device: Device::default(),
                actor: None,
            };
            let result = store.create_session(&session, &format!("gc-{i}"), Some(&audit), t0()).await;
            (i, result)
        }
    });
    for (i, result) in futures::future::join_all(attempts).await {
        if i == 20 {
            assert!(result.is_err(), "a session for a missing user was stored");
        } else {
            result.unwrap_or_else(|e| panic!("session {i} failed with its batch: {e}"));
            match store.rotate_refresh_token(&format!("gc-{i}"), &format!("gc-next-{i}"), t0()).await.unwrap()
            {
                RefreshOutcome::Rotated { .. } => {}
                other => panic!("session {i} not stored whole: {other:?}"),
            }
        }
    }
    let events = store.list_audit_events(&AuditFilter::org(org.id), None, 200).await.unwrap();
    assert_eq!(events.events.len(), 40, "one audit event per stored session, none for the failed one");
}

/// What a batch of sign-ins writes reads back exactly as it was given,
/// whatever the characters: on PostgreSQL each insert's rows travel as one
/// JSON parameter (`inserts`), so a quote, a backslash or a bracket in a
/// device's name must not end its string or its row, and an integer must
/// keep every bit.
async fn a_batch_stores_every_value_as_given(store: Store) {
    let org = store.create_org("A", false, t0()).await.unwrap();
    let user = store.create_user(&new_user(org.id, "values@example.com"), t0()).await.unwrap();
    let hostile = [
        "\"],[\"x\"",
        "back\\slash\\",
        "quote\" OR 1=1 --",
        "null",
        "[]",
        "{\"a\":1}",
        "\u{2028}line\u{2029}separators\t\r\n",
        "é😀 ünïcödé",
        "$1 ? ?? $2::json",
        "",
    ];
    // The last millisecond of year 9999 among them: near the largest an
    // expiry can be, in every bit of its integer.
    let expires = [t0().timestamp_millis() + 1, t0().timestamp_millis() + 86_400_000, 253_402_300_799_999];
    let ip = |i: usize| i.is_multiple_of(3).then(|| "2001:db8::7".parse().unwrap());
    let attempts = hostile.iter().enumerate().map(|(i, name)| {
        let store = store.clone();
        let device = Device {
            os: i.is_multiple_of(2).then(|| format!("{name}-os")),
            name: Some((*name).to_owned()),
            ip: ip(i),
        };
        let groups =
            IdpGroups::asserted(GroupsSource::Idp, &[(*name).to_owned(), format!("{name}\"")], false);
        let session = NewSession {
            id: SessionId::new(),
            user_id: user.id,
            org_id: org.id,
            auth_method: AuthMethod::ExternalRest,
            device: device.clone(),
            expires_at: DateTime::from_timestamp_millis(expires[i % expires.len()]).unwrap(),
            idp_groups: Some(groups.clone()),
            browser_token_hash: None,
        };
        let audit = NewAuditEvent {
            org_id: Some(org.id),
            user_id: Some(user.id),
            kind: "login",
            method: Some("external_rest"),
            outcome: "success",
            detail: Some(serde_json::json!({ "said": name })),
            device,
            actor: None,
        };
        async move {
            store.create_session(&session, &format!("values-{i}"), Some(&audit), t0()).await.unwrap();
            (session, groups)
        }
    });
    let written = futures::future::join_all(attempts).await;
    for (session, groups) in &written {
        let stored = store.get_session(session.id).await.unwrap();
        assert_eq!(stored.idp_groups.as_ref(), Some(groups));
        assert_eq!(stored.expires_at, session.expires_at);
        assert_eq!(stored.created_at, t0());
    }
    let events = store.list_audit_events(&AuditFilter::org(org.id), None, 200).await.unwrap().events;
    type Seen = (Option<String>, Option<String>, Option<String>, serde_json::Value);
    let mut seen: Vec<Seen> =
        events.into_iter().map(|e| (e.device_name, e.device_os, e.device_ip, e.detail.unwrap())).collect();
    let mut sent: Vec<Seen> = (0..written.len())
        .map(|i| {
            let name = hostile[i];
            let os = i.is_multiple_of(2).then(|| format!("{name}-os"));
            (
                Some(name.to_owned()),
                os,
                ip(i).map(|ip: std::net::IpAddr| ip.to_string()),
                serde_json::json!({ "said": name }),
            )
        })
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    sent.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen, sent);
}

async fn concurrent_creates_keep_their_own_outcomes(store: Store) {
    let org = store.create_org("A", true, t0()).await.unwrap();
    // 30 distinct users, 10 tries at one userName, 1 in a missing organization,
    // all at once: they share batches, and each gets its own answer.
    let attempts = (0..41).map(|i| {
        let store = store.clone();
        async move {
            let mut new = match i {
                0..30 => new_user(org.id, &format!("many{i}@example.com")),
                30..40 => new_user(org.id, &format!("same{i}@example.com")),
                _ => new_user(OrgId::new(), "orphan@example.com"),
            };
            if (30..40).contains(&i) {
                new.user_name = Some("The.Same".into());
            }
            (i, store.create_user(&new, t0()).await)
        }
    });
    let results = futures::future::join_all(attempts).await;
    for (i, r) in &results {
        match i {
            0..30 => assert!(r.is_ok(), "create {i}: {r:?}"),
            30..40 => assert!(matches!(r, Ok(_) | Err(StoreError::Conflict(_))), "create {i}: {r:?}"),
            _ => assert!(matches!(r, Err(StoreError::NotFound)), "create {i}: {r:?}"),
        }
    }
    let winners = results.iter().filter(|(i, r)| (30..40).contains(i) && r.is_ok()).count();
    assert_eq!(winners, 1, "exactly one create takes a userName");
    assert_eq!(store.count_users(org.id).await.unwrap(), 31);
    for (i, r) in results.iter().filter(|(_, r)| r.is_ok()) {
        let user = r.as_ref().unwrap();
        assert_eq!(store.get_user(user.id).await.unwrap(), *user, "create {i} returned what was stored");
    }
}

/// A key counts hits in its window; the hit that reaches the limit blocks it
/// for a window and starts the count afresh; a lapsed window starts over;
/// concurrent hits lose no count and trip exactly once.
async fn throttles_count_block_and_lapse(store: Store) {
    let rule = ThrottleRule { limit: 3, window: Duration::minutes(10) };
    let key = "login:account:abc";
    assert_eq!(store.throttle_hit(key, rule, t0()).await.unwrap(), HitOutcome::Counted { hits: 1 });
    assert_eq!(store.throttle_hit(key, rule, t0()).await.unwrap(), HitOutcome::Counted { hits: 2 });
    let until = t0() + Duration::minutes(1) + Duration::minutes(10);
    assert_eq!(
        store.throttle_hit(key, rule, t0() + Duration::minutes(1)).await.unwrap(),
        HitOutcome::Tripped { until }
    );
    let states = store.throttle_states(&[key, "unknown"]).await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!((states[0].hits, states[0].blocked_until), (0, until));
    // A reset forgets the count, not the block.
    store.throttle_hit(key, rule, t0() + Duration::minutes(2)).await.unwrap();
    store.throttle_reset(key).await.unwrap();
    let state = &store.throttle_states(&[key]).await.unwrap()[0];
    assert_eq!((state.hits, state.blocked_until), (0, until));
    // After the window, the count starts over.
    let later = t0() + Duration::hours(1);
    assert_eq!(store.throttle_hit(key, rule, later).await.unwrap(), HitOutcome::Counted { hits: 1 });
    // A limit of one trips on every hit.
    let once = ThrottleRule { limit: 1, window: Duration::seconds(30) };
    assert!(matches!(store.throttle_hit("k1", once, t0()).await.unwrap(), HitOutcome::Tripped { .. }));

    // Nothing is pruned while it counts or blocks; everything once it lapsed.
    assert_eq!(store.prune_throttles(t0() + Duration::seconds(20)).await.unwrap(), 0);
    assert_eq!(store.prune_throttles(t0() + Duration::days(1)).await.unwrap(), 2);
    assert!(store.throttle_states(&[key, "k1"]).await.unwrap().is_empty());

    // A sign-in reads its counters with its account, as throttle_states
    // would, and on their own for an email without one.
    let org = store.create_org("Acme", false, t0()).await.unwrap();
    store.create_user(&new_user(org.id, "ana@example.com"), t0()).await.unwrap();
    let blocked = "login:account:ana";
    let once = ThrottleRule { limit: 1, window: Duration::minutes(5) };
    store.throttle_hit(blocked, once, t0()).await.unwrap();
    store.throttle_hit("login:ip:x", rule, t0()).await.unwrap();
    let keys = [blocked, "login:ip:x"];
    let direct = store.throttle_states(&keys).await.unwrap();
    assert_eq!(direct.len(), 2);
    for email in ["ana@example.com", "nobody@example.com"] {
        let lookup = store.find_user_for_login(&Email::parse(email).unwrap(), &keys).await.unwrap();
        let mut read = lookup.throttles.clone();
        read.sort_by(|a, b| a.key.cmp(&b.key));
        let mut expected = direct.clone();
        expected.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(read, expected, "{email}");
        assert_eq!(lookup.account.is_some(), email.starts_with("ana"));
    }
    let lookup =
        store.find_user_for_login(&Email::parse("ana@example.com").unwrap(), &["none"]).await.unwrap();
    assert!(lookup.throttles.is_empty() && lookup.account.is_some());

    // Concurrent hits: 40 at a limit of 25 trip once, and leave 15 counted.
    let rule = ThrottleRule { limit: 25, window: Duration::minutes(10) };
    let hits = (0..40).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.throttle_hit("busy", rule, t0()).await.unwrap() })
    });
    let outcomes = futures::future::join_all(hits).await;
    let tripped =
        outcomes.iter().filter(|o| matches!(o.as_ref().unwrap(), HitOutcome::Tripped { .. })).count();
    assert_eq!(tripped, 1);
    assert_eq!(store.throttle_states(&["busy"]).await.unwrap()[0].hits, 15);
}

/// A changed or cleared password ends every session of its user; an
/// organization switching to external authentication ends the sessions its
/// erased passwords signed in, and no other.
async fn password_changes_end_sessions(store: Store) {
    let org = store.create_org("Acme", false, t0()).await.unwrap();
    let alice = store.create_user(&new_user(org.id, "alice@example.com"), t0()).await.unwrap();
    let first = session_for(&store, alice.id, org.id, "h1").await;
    let update = UserUpdate { password_hash: Some(Some("$argon2id$new".into())), ..Default::default() };
    store.update_user(alice.id, &update, t0()).await.unwrap();
    assert!(!store.get_session(first).await.unwrap().is_live(t0()), "a new password ends old sessions");
    let second = session_for(&store, alice.id, org.id, "h2").await;
    let update = UserUpdate { password_hash: Some(None), ..Default::default() };
    store.update_user(alice.id, &update, t0()).await.unwrap();
    assert!(!store.get_session(second).await.unwrap().is_live(t0()), "so does clearing it");
    let third = session_for(&store, alice.id, org.id, "h3").await;
    let update = UserUpdate { display_name: Some("Alice".into()), ..Default::default() };
    store.update_user(alice.id, &update, t0()).await.unwrap();
    assert!(store.get_session(third).await.unwrap().is_live(t0()), "other changes do not");

    let by_password = session_for(&store, alice.id, org.id, "h4").await;
    let by_sso = SessionId::new();
    let session = NewSession {
        id: by_sso,
        user_id: alice.id,
        org_id: org.id,
        auth_method: AuthMethod::Oidc,
        device: Device::default(),
        expires_at: t0() + Duration::days(30),
        idp_groups: None,
        browser_token_hash: None,
    };
    store.create_session(&session, "h5", None, t0()).await.unwrap();
    store.clear_org_password_hashes(org.id, t0()).await.unwrap();
    assert!(!store.get_session(by_password).await.unwrap().is_live(t0()));
    assert!(store.get_session(by_sso).await.unwrap().is_live(t0()), "single sign-on sessions stay");
    assert!(store.revoke_session(by_sso, "signed out", t0()).await.unwrap());
    assert!(!store.revoke_session(by_sso, "signed out", t0()).await.unwrap(), "once");
    assert!(!store.get_session(by_sso).await.unwrap().is_live(t0()));
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let db = gatehouse_testkit::TestDb::sqlite();
                    let store = gatehouse_store::Store::open(db.url()).await.unwrap();
                    super::$scenario(store.clone()).await;
                    store.close().await;
                    // Reopening runs the migrations again: they must be a no-op.
                    gatehouse_store::Store::open(db.url()).await.unwrap().ping().await.unwrap();
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let Some(db) = gatehouse_testkit::TestDb::postgres().await else { return };
                    let store = gatehouse_store::Store::open(db.url()).await.unwrap();
                    super::$scenario(store.clone()).await;
                    store.close().await;
                }
            )*
        }
    };
}

/// The deepest addresses an email can have (over a hundred labels) are
/// checked against every domain above them, also when a batch of them is
/// more domains than one query looks up.
async fn the_deepest_addresses_are_checked_against_every_parent(store: Store) {
    let victim = store.create_org("Victim", false, t0()).await.unwrap();
    let squatter = store.create_org("Squatter", false, t0()).await.unwrap();
    store.add_domain(victim.id, "victim.example", "c", t0()).await.unwrap();
    store.mark_domain_verified(victim.id, "victim.example", "dns", t0()).await.unwrap();
    // 118 one-letter labels above the domain: a 252-character address.
    let deep = |label: char, domain: &str| format!("x@{}{domain}", format!("{label}.").repeat(118));
    assert_eq!(deep('a', "victim.example").len(), 252);
    assert_eq!(
        store.domain_owner(&deep('a', "victim.example")[2..]).await.unwrap(),
        Some((victim.id, "victim.example".into()))
    );
    // Sixteen at once, each with its own chain of parents, share batches.
    let attempts = ('a'..='p').map(|label| {
        let (store, address) = (store.clone(), deep(label, "victim.example"));
        async move { store.create_user(&new_user(squatter.id, &address), t0()).await }
    });
    for refused in futures::future::join_all(attempts).await {
        assert!(matches!(&refused, Err(StoreError::DomainOwned(d)) if d == "victim.example"), "{refused:?}");
    }
    let free = store.create_user(&new_user(squatter.id, &deep('a', "free.example")), t0()).await.unwrap();
    assert_eq!(store.list_users(squatter.id, None, 100).await.unwrap().users, [free]);
}

async fn verified_domains_belong_to_one_org_and_its_users(store: Store) {
    let victim = store.create_org("Victim", false, t0()).await.unwrap();
    let squatter = store.create_org("Squatter", false, t0()).await.unwrap();
    // Addresses created before anyone verified the domain stay; they are
    // what the conflicts report is for.
    let early = store.create_user(&new_user(squatter.id, "early@victim.example"), t0()).await.unwrap();

    store.add_domain(victim.id, "victim.example", "c1", t0()).await.unwrap();
    store.add_domain(squatter.id, "victim.example", "c2", t0()).await.unwrap();
    assert!(matches!(
        store.add_domain(victim.id, "victim.example", "c3", t0()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.add_domain(OrgId::new(), "x.example", "c", t0()).await,
        Err(StoreError::NotFound)
    ));
    // Claims alone own nothing.
    store.create_user(&new_user(squatter.id, "claim@victim.example"), t0()).await.unwrap();
    assert_eq!(store.domain_owner("victim.example").await.unwrap(), None);

    let verified = store.mark_domain_verified(victim.id, "victim.example", "dns", t0()).await.unwrap();
    assert_eq!(verified.verified_at, Some(t0()));
    assert_eq!(verified.verified_by.as_deref(), Some("dns"));
    // Once verified, by at most one organization.
    assert!(matches!(
        store.mark_domain_verified(squatter.id, "victim.example", "dns", t0()).await,
        Err(StoreError::Conflict(_))
    ));
    // Verifying again changes nothing.
    let again =
        store.mark_domain_verified(victim.id, "victim.example", "admin:x", t0() + Duration::hours(1)).await;
    assert_eq!(again.unwrap(), verified);

    assert_eq!(
        store.domain_owner("victim.example").await.unwrap(),
        Some((victim.id, "victim.example".into()))
    );
    assert_eq!(
        store.domain_owner("mail.eu.victim.example").await.unwrap(),
        Some((victim.id, "victim.example".into())),
        "subdomains belong to the domain's owner"
    );
    assert_eq!(store.domain_owner("notvictim.example").await.unwrap(), None);

    // No other organization creates an address there, or renames a user into it.
    for email in ["cfo@victim.example", "CFO@Mail.Victim.Example"] {
        let refused = store.create_user(&new_user(squatter.id, email), t0()).await;
        assert!(matches!(&refused, Err(StoreError::DomainOwned(d)) if d == "victim.example"), "{refused:?}");
    }
    let rename =
        UserUpdate { email: Some(Some(Email::parse("cfo@victim.example").unwrap())), ..Default::default() };
    assert!(matches!(store.update_user(early.id, &rename, t0()).await, Err(StoreError::DomainOwned(_))));
    assert_eq!(
        store.get_user(early.id).await.unwrap().email.unwrap().as_str(),
        "early@victim.example",
        "nothing changed"
    );
    // Just-in-time creation is refused the same way.
    let jit = store
        .create_linked_user(
            &new_user(squatter.id, "jit@victim.example"),
            "conn",
            "sub",
            &NewAuditEvent::change(squatter.id, "sso_sign_in", None, serde_json::json!({})),
            t0(),
        )
        .await;
    assert!(matches!(jit, Err(StoreError::DomainOwned(_))));
    // The owner creates them; other domains are anyone's.
    store.create_user(&new_user(victim.id, "cfo@victim.example"), t0()).await.unwrap();
    store.create_user(&new_user(squatter.id, "cfo@notvictim.example"), t0()).await.unwrap();

    // A more specific domain verified by another organization is that one's.
    let sub = store.create_org("Subsidiary", false, t0()).await.unwrap();
    store.add_domain(sub.id, "eu.victim.example", "c4", t0()).await.unwrap();
    store.mark_domain_verified(sub.id, "eu.victim.example", "admin:x", t0()).await.unwrap();
    store.create_user(&new_user(sub.id, "ana@eu.victim.example"), t0()).await.unwrap();
    assert!(matches!(
        store.create_user(&new_user(victim.id, "bo@eu.victim.example"), t0()).await,
        Err(StoreError::DomainOwned(d)) if d == "eu.victim.example"
    ));

    // The conflicts found: the two squatter users created before verification.
    let conflicts = store.domain_conflicts(50).await.unwrap();
    let mut emails: Vec<_> = conflicts.iter().map(|c| c.email.as_str()).collect();
    emails.sort_unstable();
    assert_eq!(emails, ["claim@victim.example", "early@victim.example"]);
    assert!(conflicts.iter().all(|c| c.owner_org_id == victim.id && c.user_org_id == squatter.id));

    // Batches of creates keep their own outcomes under the rule too.
    let creates = ["a@victim.example", "b@elsewhere.example", "c@victim.example"]
        .map(|e| new_user(squatter.id, e))
        .map(|n| {
            let store = store.clone();
            async move { store.create_user(&n, t0()).await }
        });
    let outcomes = futures::future::join_all(creates).await;
    assert!(matches!(outcomes[0], Err(StoreError::DomainOwned(_))));
    assert!(outcomes[1].is_ok());
    assert!(matches!(outcomes[2], Err(StoreError::DomainOwned(_))));

    // Dropping the claim frees the domain.
    store.delete_domain(victim.id, "victim.example").await.unwrap();
    assert!(matches!(store.delete_domain(victim.id, "victim.example").await, Err(StoreError::NotFound)));
    assert_eq!(store.domain_owner("victim.example").await.unwrap(), None);
    store.create_user(&new_user(squatter.id, "cfo2@victim.example"), t0()).await.unwrap();
    assert_eq!(store.list_domains(victim.id).await.unwrap(), vec![]);
    assert_eq!(store.list_domains(squatter.id).await.unwrap().len(), 1);
}

async fn scim_deletions_leave_tombstones_until_scim_creates_again(store: Store) {
    let org = store.create_org("A", true, t0()).await.unwrap();
    let other = store.create_org("B", true, t0()).await.unwrap();
    let mut new = new_user(org.id, "Gone@A.test");
    new.external_id = Some("00U-GONE".into());
    let user = store.create_user(&new, t0()).await.unwrap();
    let connection = gatehouse_store::ConnectionRecord {
        id: "conn-1".into(),
        org_id: org.id,
        kind: "okta".into(),
        config: "{}".into(),
        client_secret_sealed: "sealed".into(),
        created_at: t0(),
        updated_at: t0(),
    };
    store.create_connection(&connection).await.unwrap();
    store.link_identity("conn-1", "sub-gone", user.id, t0()).await.unwrap();
    let keys = |subject, email, external_id| SignInKeys {
        org: org.id,
        connection_id: "conn-1",
        subject,
        email,
        external_id,
    };
    assert_eq!(store.find_tombstone(keys("sub-gone", None, None)).await.unwrap(), None);

    store.delete_user_tombstoned(user.id, t0()).await.unwrap();
    assert!(matches!(store.get_user(user.id).await, Err(StoreError::NotFound)));
    assert_eq!(store.linked_user("conn-1", "sub-gone").await.unwrap(), None, "the link went with the user");
    let found = store.find_tombstone(keys("sub-gone", None, None)).await.unwrap().unwrap();
    assert_eq!((found.user_id, found.deleted_at), (user.id, t0()));
    // By any of its keys, in any case; and only in its organization.
    assert!(store.find_tombstone(keys("new-sub", Some("gone@a.test"), None)).await.unwrap().is_some());
    assert!(store.find_tombstone(keys("new-sub", None, Some("00u-gone"))).await.unwrap().is_some());
    assert!(store.find_tombstone(keys("new-sub", Some("other@a.test"), Some(""))).await.unwrap().is_none());
    let elsewhere = SignInKeys { org: other.id, ..keys("sub-gone", Some("gone@a.test"), None) };
    assert!(store.find_tombstone(elsewhere).await.unwrap().is_none());
    assert!(matches!(store.delete_user_tombstoned(user.id, t0()).await, Err(StoreError::NotFound)));

    // SCIM creating the person again lifts it.
    let again = store.provision_user(&new_user(org.id, "GONE@a.test"), None, t0()).await.unwrap();
    assert_eq!(again.1, 1);
    assert!(
        store
            .find_tombstone(keys("sub-gone", Some("gone@a.test"), Some("00u-gone")))
            .await
            .unwrap()
            .is_none()
    );
}

/// Provisioning lifts the tombstones of the user's address or externalId
/// in the creation's own transaction: each concurrent creation (sharing
/// batches) learns what it lifted, and a creation that fails lifts nothing.
async fn provisioning_lifts_tombstones_with_the_creation(store: Store) {
    use gatehouse_store::{EmailCondition, EmailField, TextOp, UserCondition};
    let org = store.create_org("A", true, t0()).await.unwrap();
    let other = store.create_org("B", true, t0()).await.unwrap();
    let with_ext = |org, email: &str, ext: &str| NewUser {
        external_id: Some(ext.into()),
        user_name: Some(email.into()),
        created_via: Origin::Scim,
        ..new_user(org, email)
    };
    let mut gone = Vec::new();
    for (email, ext) in [("ann@a.test", "ext-ann"), ("bo@a.test", "ext-bo"), ("cy@a.test", "ext-cy")] {
        let user = store.create_user(&with_ext(org.id, email, ext), t0()).await.unwrap();
        store.delete_user_tombstoned(user.id, t0()).await.unwrap();
        gone.push(user);
    }
    let tombstone = |email: &'static str| {
        let store = store.clone();
        async move {
            let keys = SignInKeys {
                org: org.id,
                connection_id: "c",
                subject: "s",
                email: Some(email),
                external_id: None,
            };
            store.find_tombstone(keys).await.unwrap()
        }
    };

    // Ann again by address (in another case), Bo by externalId only, and
    // someone new, at once; and Cy's externalId in another organization.
    let news = [
        with_ext(org.id, "ANN@a.test", "ext-ann-2"),
        NewUser { email: None, ..with_ext(org.id, "bo2@b.test", "EXT-BO") },
        with_ext(org.id, "dee@a.test", "ext-dee"),
        with_ext(other.id, "cy@b.test", "ext-cy"),
    ];
    let (ann, bo, new, elsewhere) = futures::join!(
        store.provision_user(&news[0], None, t0()),
        store.provision_user(&news[1], None, t0()),
        store.provision_user(&news[2], None, t0()),
        store.provision_user(&news[3], None, t0()),
    );
    assert_eq!(ann.unwrap().1, 1);
    assert_eq!(bo.unwrap().1, 1);
    assert_eq!(new.unwrap().1, 0);
    assert_eq!(elsewhere.unwrap().1, 0, "a tombstone binds only its own organization");
    assert!(tombstone("ann@a.test").await.is_none());
    assert!(tombstone("bo@a.test").await.is_none());

    // Cy's creation fails (the userName is taken): the tombstone stays.
    store.create_user(&with_ext(org.id, "taken@a.test", "ext-taken"), t0()).await.unwrap();
    let clash = NewUser { user_name: Some("TAKEN@a.test".into()), ..with_ext(org.id, "cy@a.test", "ext-cy") };
    assert!(matches!(store.provision_user(&clash, None, t0()).await, Err(StoreError::Conflict(_))));
    assert!(tombstone("cy@a.test").await.is_some());
    let (_, lifted) =
        store.provision_user(&with_ext(org.id, "cy@a.test", "ext-cy"), None, t0()).await.unwrap();
    assert_eq!(lifted, 1);
    assert!(tombstone("cy@a.test").await.is_none());

    // A user with more emails than one statement indexes beside the rest
    // of its batch is indexed whole all the same.
    let emails: Vec<serde_json::Value> =
        (0..1200).map(|i| serde_json::json!({ "value": format!("addr{i}@many.test") })).collect();
    let many = NewUser {
        scim_resource: Some(serde_json::json!({ "emails": emails }).to_string()),
        ..with_ext(org.id, "many@a.test", "ext-many")
    };
    let (many, _) = store.provision_user(&many, None, t0()).await.unwrap();
    let last = UserCondition::AnyEmail(EmailCondition::Text {
        field: EmailField::Value,
        op: TextOp::Eq,
        value: "addr1199@many.test".into(),
    });
    let found = store.users_matching(org.id, Some(&last), UserWindow::After(None), 10).await.unwrap();
    assert_eq!(found.users.iter().map(|u| u.id).collect::<Vec<_>>(), [many.id]);
}

/// A filter on emails finds users by the emails they have now: when a
/// user's emails change (its SCIM resource's, or the platform email that
/// stands in for them), the old ones stop matching and the new ones match,
/// by equality and by substring (on SQLite, through the trigram index), and
/// nobody else's entries move.
async fn email_filters_follow_changed_emails(store: Store) {
    use gatehouse_store::{EmailCondition, EmailField, TextOp, UserCondition};
    let org = store.create_org("A", true, t0()).await.unwrap();
    let resource = |emails: &[&str]| {
        let emails: Vec<_> =
            emails.iter().map(|e| serde_json::json!({ "value": e, "type": "work" })).collect();
        Some(serde_json::json!({ "emails": emails }).to_string())
    };
    let ann = NewUser {
        scim_resource: resource(&["ann@old.test", "ann.2@old.test"]),
        ..new_user(org.id, "ann@a.test")
    };
    let ann = store.create_user(&ann, t0()).await.unwrap();
    let bo = store.create_user(&new_user(org.id, "bo@a.test"), t0()).await.unwrap();
    let found = |op: TextOp, value: &'static str| {
        let store = store.clone();
        async move {
            let condition = UserCondition::AnyEmail(EmailCondition::Text {
                field: EmailField::Value,
                op,
                value: value.into(),
            });
            let page =
                store.users_matching(org.id, Some(&condition), UserWindow::After(None), 10).await.unwrap();
            page.users.into_iter().map(|u| u.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(found(TextOp::Eq, "ann.2@old.test").await, [ann.id]);
    assert_eq!(found(TextOp::Eq, "bo@a.test").await, [bo.id], "the platform email stands in");

    let moved = UserUpdate { scim_resource: Some(resource(&["ann@new.test"])), ..Default::default() };
    store.update_user(ann.id, &moved, t0()).await.unwrap();
    assert!(found(TextOp::Eq, "ann@old.test").await.is_empty());
    assert!(found(TextOp::Eq, "ann.2@old.test").await.is_empty());
    assert!(found(TextOp::Co, "old.tes").await.is_empty());
    assert_eq!(found(TextOp::Eq, "ann@new.test").await, [ann.id]);
    assert_eq!(found(TextOp::Co, "new.tes").await, [ann.id]);

    let renamed = UserUpdate { email: Some(Some(Email::parse("bo@b.test").unwrap())), ..Default::default() };
    store.update_user(bo.id, &renamed, t0()).await.unwrap();
    assert!(found(TextOp::Eq, "bo@a.test").await.is_empty());
    assert_eq!(found(TextOp::Eq, "bo@b.test").await, [bo.id]);
    assert_eq!(
        found(TextOp::Eq, "ann@new.test").await,
        [ann.id],
        "one user's change leaves the others alone"
    );
}

async fn sessions_keep_the_groups_their_idp_asserted(store: Store) {
    let org = store.create_org("A", true, t0()).await.unwrap();
    let user = store.create_user(&new_user(org.id, "g@a.test"), t0()).await.unwrap();
    let idp_groups = IdpGroups::asserted(GroupsSource::Idp, &["Eng".into()], false);
    let session = NewSession {
        id: SessionId::new(),
        user_id: user.id,
        org_id: org.id,
        auth_method: AuthMethod::Oidc,
        device: Device::default(),
        expires_at: t0() + Duration::days(1),
        idp_groups: Some(idp_groups.clone()),
        browser_token_hash: None,
    };
    store.create_session(&session, "refresh-g", None, t0()).await.unwrap();
    assert_eq!(store.get_session(session.id).await.unwrap().idp_groups, Some(idp_groups.clone()));
    match store.rotate_refresh_token("refresh-g", "refresh-g2", t0()).await.unwrap() {
        RefreshOutcome::Rotated { session, .. } => assert_eq!(session.idp_groups, Some(idp_groups)),
        other => panic!("{other:?}"),
    }
}

async fn audit_filters_and_retention(store: Store) {
    let org = store.create_org("A", false, t0()).await.unwrap();
    let user = store.create_user(&new_user(org.id, "u@example.com"), t0()).await.unwrap();
    let events = [
        (Some(org.id), Some(user.id), "login", 0),
        (None, None, "login", 1),
        (Some(org.id), None, "user_created", 2),
        (Some(org.id), Some(user.id), "user_updated", 40 * 24 * 3600),
    ];
    for (org_id, user_id, kind, at) in events {
        let event = NewAuditEvent {
            org_id,
            user_id,
            kind,
            method: None,
            outcome: "success",
            detail: None,
            device: Device::default(),
            actor: Some("admin:bootstrap".into()),
        };
        store.record_audit_event(&event, t0() + Duration::seconds(at)).await.unwrap();
    }
    let list = |filter: AuditFilter| {
        let store = store.clone();
        async move {
            let page = store.list_audit_events(&filter, None, 50).await.unwrap();
            page.events.into_iter().map(|e| e.kind).collect::<Vec<_>>()
        }
    };
    assert_eq!(list(AuditFilter::default()).await, ["user_updated", "user_created", "login", "login"]);
    assert_eq!(list(AuditFilter { org: OrgScope::None, ..Default::default() }).await, ["login"]);
    assert_eq!(list(AuditFilter { kind: Some("login".into()), ..AuditFilter::org(org.id) }).await, ["login"]);
    assert_eq!(
        list(AuditFilter { user: Some(user.id), ..Default::default() }).await,
        ["user_updated", "login"]
    );
    let window = AuditFilter {
        since: Some(t0() + Duration::seconds(1)),
        until: Some(t0() + Duration::days(1)),
        ..Default::default()
    };
    assert_eq!(list(window).await, ["user_created", "login"]);
    // Conditions together, and a user's events page by page.
    let users_logins =
        AuditFilter { user: Some(user.id), kind: Some("login".into()), ..AuditFilter::org(org.id) };
    assert_eq!(list(users_logins).await, ["login"]);
    let users = AuditFilter { user: Some(user.id), ..AuditFilter::org(org.id) };
    let first = store.list_audit_events(&users, None, 1).await.unwrap();
    let rest = store.list_audit_events(&users, first.next.as_deref(), 1).await.unwrap();
    let pages: Vec<_> = first.events.iter().chain(&rest.events).map(|e| e.kind.as_str()).collect();
    assert_eq!(pages, ["user_updated", "login"]);
    assert_eq!(rest.next, None);
    // A value is a value, never part of the statement.
    let hostile = AuditFilter { kind: Some("x' OR '1'='1".into()), ..AuditFilter::default() };
    assert!(list(hostile).await.is_empty());
    let page = store.list_audit_events(&AuditFilter::default(), None, 1).await.unwrap();
    assert_eq!(page.events[0].actor.as_deref(), Some("admin:bootstrap"));

    // Retention: everything recorded before the cutoff goes, nothing after.
    assert_eq!(store.prune_audit_events(t0() + Duration::days(30)).await.unwrap(), 3);
    assert_eq!(list(AuditFilter::default()).await, ["user_updated"]);
    assert_eq!(store.prune_audit_events(t0() + Duration::days(30)).await.unwrap(), 0);
}

conformance!(
    prefixes_match_what_starts_with_them,
    substring_filters_agree_with_a_scan,
    users_may_have_no_email_but_a_user_name,
    portal_sessions_and_setup_links_are_scoped_and_end,
    password_reset_links_work_once,
    browser_sessions_connection_health_and_last_sign_ins,
    verified_domains_belong_to_one_org_and_its_users,
    the_deepest_addresses_are_checked_against_every_parent,
    scim_deletions_leave_tombstones_until_scim_creates_again,
    provisioning_lifts_tombstones_with_the_creation,
    email_filters_follow_changed_emails,
    sessions_keep_the_groups_their_idp_asserted,
    a_batch_stores_every_value_as_given,
    audit_filters_and_retention,
    orgs_round_trip,
    users_are_unique_by_email_in_any_case,
    user_updates_apply_and_clear,
    users_page_in_creation_order,
    refresh_tokens_rotate_once_and_reuse_revokes,
    concurrent_refreshes_have_one_winner,
    concurrent_rotations_keep_their_own_outcomes,
    sessions_expire_and_die_with_their_user,
    logout_revokes_the_session,
    signing_keys_stay_published_until_retired_long_enough,
    admin_tokens_are_found_by_hash_until_revoked,
    audit_events_list_newest_first,
    deleting_an_org_removes_its_users_and_sessions,
    rest_auth_replaces_local_passwords,
    scim_user_names_versions_and_tokens,
    groups_keep_members_and_serialise_changes,
    connections_round_trip,
    concurrent_sessions_are_group_committed_and_failures_stay_apart,
    concurrent_creates_keep_their_own_outcomes,
    sso_policies_default_and_replace,
    sso_flows_and_codes_work_once_and_expire,
    identity_links_are_unique_and_created_with_their_user,
    throttles_count_block_and_lapse,
    password_changes_end_sessions,
);

async fn portal_sessions_and_setup_links_are_scoped_and_end(store: Store) {
    use gatehouse_store::{PortalLink, PortalSession};
    let org = store.create_org("A", true, t0()).await.unwrap();
    let other = store.create_org("B", true, t0()).await.unwrap();
    let scoped = PortalSession {
        org_id: Some(org.id),
        actor: "setup:link-1".into(),
        expires_at: t0() + Duration::hours(8),
    };
    store.create_portal_session("hash-a", &scoped, t0()).await.unwrap();
    let platform = PortalSession { org_id: None, actor: "admin:bootstrap".into(), ..scoped.clone() };
    store.create_portal_session("hash-b", &platform, t0()).await.unwrap();
    assert_eq!(store.portal_session("hash-a", t0()).await.unwrap(), Some(scoped.clone()));
    assert_eq!(store.portal_session("hash-b", t0()).await.unwrap().unwrap().org_id, None);
    assert_eq!(store.portal_session("nope", t0()).await.unwrap(), None);
    assert_eq!(store.portal_session("hash-a", t0() + Duration::hours(8)).await.unwrap(), None, "expired");
    store.end_portal_session("hash-b", t0()).await.unwrap();
    assert_eq!(store.portal_session("hash-b", t0()).await.unwrap(), None, "signed out");

    let link = PortalLink {
        id: "link-1".into(),
        org_id: org.id,
        created_by: "admin:bootstrap".into(),
        created_at: t0(),
        expires_at: t0() + Duration::days(7),
        revoked_at: None,
    };
    store.create_portal_link(&link, "link-hash").await.unwrap();
    assert!(matches!(store.create_portal_link(&link, "link-hash").await, Err(StoreError::Conflict(_))));
    assert_eq!(store.portal_link("link-hash", t0()).await.unwrap(), Some(link.clone()));
    assert_eq!(store.portal_link("link-hash", t0() + Duration::days(7)).await.unwrap(), None, "expired");
    assert_eq!(store.list_portal_links(org.id).await.unwrap(), vec![link.clone()]);
    assert!(store.list_portal_links(other.id).await.unwrap().is_empty());
    // Revoking through another organization finds nothing.
    assert!(matches!(
        store.revoke_portal_link(other.id, "link-1", "setup:link-1", t0()).await,
        Err(StoreError::NotFound)
    ));
    store.revoke_portal_link(org.id, "link-1", "setup:link-1", t0()).await.unwrap();
    assert_eq!(store.portal_link("link-hash", t0()).await.unwrap(), None);
    assert_eq!(store.portal_session("hash-a", t0()).await.unwrap(), None, "its sessions end with it");
    assert!(store.list_portal_links(org.id).await.unwrap()[0].revoked_at.is_some());
}

async fn password_reset_links_work_once(store: Store) {
    let org = store.create_org("A", false, t0()).await.unwrap();
    let user = store.create_user(&new_user(org.id, "a@example.com"), t0()).await.unwrap();
    let session = session_for(&store, user.id, org.id, "refresh-1").await;
    store.create_password_reset(user.id, "old", t0() + Duration::hours(1), t0()).await.unwrap();
    store.create_password_reset(user.id, "new", t0() + Duration::hours(1), t0()).await.unwrap();
    assert_eq!(store.password_reset_user("old", t0()).await.unwrap(), None, "only the newest link works");
    assert_eq!(store.password_reset_user("new", t0()).await.unwrap(), Some(user.id));
    assert_eq!(store.password_reset_user("new", t0() + Duration::hours(1)).await.unwrap(), None, "expired");

    let later = t0() + Duration::minutes(5);
    assert_eq!(store.spend_password_reset("new", "$argon2id$new", later).await.unwrap(), Some(user.id));
    assert_eq!(
        store.spend_password_reset("new", "$argon2id$again", later).await.unwrap(),
        None,
        "single use"
    );
    assert_eq!(store.get_user(user.id).await.unwrap().password_hash.as_deref(), Some("$argon2id$new"));
    assert!(store.get_session(session).await.unwrap().revoked_at.is_some(), "sessions end");
}

async fn browser_sessions_connection_health_and_last_sign_ins(store: Store) {
    let org = store.create_org("A", true, t0()).await.unwrap();
    let user = store.create_user(&new_user(org.id, "a@example.com"), t0()).await.unwrap();
    let quiet = store.create_user(&new_user(org.id, "b@example.com"), t0()).await.unwrap();
    let session = NewSession {
        id: SessionId::new(),
        user_id: user.id,
        org_id: org.id,
        auth_method: AuthMethod::Oidc,
        device: Device::default(),
        expires_at: t0() + Duration::days(1),
        idp_groups: None,
        browser_token_hash: Some("browser-hash".into()),
    };
    store.create_session(&session, "refresh-b", None, t0()).await.unwrap();
    let (found, owner) = store.browser_session("browser-hash").await.unwrap().unwrap();
    assert_eq!((found.id, owner.id), (session.id, user.id));
    assert!(store.browser_session("other").await.unwrap().is_none());
    let seen = store.last_sign_ins(&[user.id, quiet.id]).await.unwrap();
    assert_eq!(seen, vec![(user.id, t0())]);
    assert!(store.last_sign_ins(&[]).await.unwrap().is_empty());

    store.create_connection(&connection("conn-1", org.id)).await.unwrap();
    assert_eq!(store.connection_health("conn-1").await.unwrap(), Default::default());
    store.record_connection_outcome("conn-1", None, t0()).await.unwrap();
    let later = t0() + Duration::minutes(1);
    store.record_connection_outcome("conn-1", Some("the IdP refused"), later).await.unwrap();
    let health = store.connection_health("conn-1").await.unwrap();
    assert_eq!(health.last_success_at, Some(t0()));
    assert_eq!(health.last_failure_at, Some(later));
    assert_eq!(health.last_failure_reason.as_deref(), Some("the IdP refused"));
    store.record_connection_outcome("conn-1", None, later).await.unwrap();
    assert_eq!(
        store.connection_health("conn-1").await.unwrap().last_failure_reason.as_deref(),
        Some("the IdP refused"),
        "a success keeps the last failure on show"
    );
    // A connection deleted meanwhile: nothing to record, and no error.
    store.record_connection_outcome("gone", None, later).await.unwrap();
}

/// SCIM requires only a userName: a user may have no email, and any number
/// of them may coexist; a user with neither is refused by the schema.
async fn users_may_have_no_email_but_a_user_name(store: Store) {
    use gatehouse_store::{UserSort, UserSortKey};
    let org = store.create_org("A", true, t0()).await.unwrap();
    let other = store.create_org("B", true, t0()).await.unwrap();
    let nameless = |org: OrgId, name: &str| NewUser {
        user_name: Some(name.into()),
        external_id: Some(format!("ext-{name}")),
        display_name: "Someone".into(),
        ..NewUser::member(org, Origin::Scim)
    };
    let jdoe = store.create_user(&nameless(org.id, "JDoe"), t0()).await.unwrap();
    assert_eq!((jdoe.email.as_ref(), jdoe.scim_user_name(), jdoe.handle()), (None, "JDoe", "JDoe"));
    let read = store.get_user(jdoe.id).await.unwrap();
    assert_eq!(read, jdoe);
    assert_eq!(store.find_user_by_user_name(org.id, "jdoe").await.unwrap().map(|u| u.id), Some(jdoe.id));
    // Several users without an email, here and elsewhere.
    let rroe = store.create_user(&nameless(org.id, "rroe"), t0()).await.unwrap();
    store.create_user(&nameless(other.id, "jdoe"), t0()).await.unwrap();
    let ada = store.create_user(&new_user(org.id, "ada@a.test"), t0()).await.unwrap();
    // The userName is still unique in the organization.
    assert!(matches!(store.create_user(&nameless(org.id, "JDOE"), t0()).await, Err(StoreError::Conflict(_))));
    // Neither an email nor a userName: refused, nothing stored.
    let anonymous = NewUser { user_name: None, ..nameless(org.id, "x") };
    assert!(store.create_user(&anonymous, t0()).await.is_err());
    assert_eq!(store.list_users(org.id, None, 50).await.unwrap().users.len(), 3);

    // Gaining an email, and losing it again.
    let address = Email::parse("John.Doe@a.test").unwrap();
    let gained = UserUpdate { email: Some(Some(address.clone())), ..Default::default() };
    let updated = store.update_user(jdoe.id, &gained, t0()).await.unwrap();
    assert_eq!((updated.email.as_ref(), updated.scim_user_name()), (Some(&address), "JDoe"));
    assert_eq!(store.find_user_by_email(&address).await.unwrap().map(|u| u.id), Some(jdoe.id));
    let lost = UserUpdate { email: Some(None), ..Default::default() };
    assert_eq!(store.update_user(jdoe.id, &lost, t0()).await.unwrap().email, None);
    assert_eq!(store.find_user_by_email(&address).await.unwrap(), None);
    // Ada has no userName of her own: her email is it, and cannot go.
    assert!(store.update_user(ada.id, &lost, t0()).await.is_err());
    assert_eq!(store.get_user(ada.id).await.unwrap().email.unwrap().as_str(), "ada@a.test");

    // Without an email, last when sorting by email (first, descending).
    let by_email = |descending| UserWindow::Offset {
        offset: 0,
        sort: Some(UserSort { key: UserSortKey::Email, descending }),
    };
    let ids = |users: Vec<gatehouse_core::User>| users.into_iter().map(|u| u.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.users_matching(org.id, None, by_email(false), 10).await.unwrap().users),
        [ada.id, jdoe.id, rroe.id]
    );
    assert_eq!(
        ids(store.users_matching(org.id, None, by_email(true), 10).await.unwrap().users),
        [rroe.id, jdoe.id, ada.id]
    );

    // A deleted user without an email leaves a tombstone without one, which
    // no other address-less creation lifts.
    store.delete_user_tombstoned(jdoe.id, t0()).await.unwrap();
    let keys = SignInKeys {
        org: org.id,
        connection_id: "c",
        subject: "s",
        email: None,
        external_id: Some("EXT-JDoe"),
    };
    assert!(store.find_tombstone(keys).await.unwrap().is_some());
    let lifted = |new: NewUser| {
        let store = store.clone();
        async move { store.provision_user(&new, None, t0()).await.unwrap().1 }
    };
    assert_eq!(
        lifted(NewUser { external_id: Some("ext-rroe".into()), ..nameless(org.id, "rroe2") }).await,
        0
    );
    assert_eq!(lifted(NewUser { external_id: None, ..nameless(org.id, "nokeys") }).await, 0);
    assert!(store.find_tombstone(keys).await.unwrap().is_some());
    assert_eq!(lifted(nameless(org.id, "jdoe")).await, 1);
    assert!(store.find_tombstone(keys).await.unwrap().is_none());
}

/// `sw` is a range of an index in byte order on both backends: it must
/// match exactly the userNames and email values that start with the
/// prefix, whatever the prefix holds (LIKE's metacharacters, characters
/// beyond ASCII, the last code point, which has no successor), and nothing
/// of another organization.
async fn prefixes_match_what_starts_with_them(store: Store) {
    use gatehouse_store::{EmailCondition, EmailField, TextOp, UserColumn, UserCondition};

    let org = store.create_org("A", true, t0()).await.unwrap();
    let other = store.create_org("B", true, t0()).await.unwrap();
    let names = [
        "ab",
        "abc",
        "abd",
        "ab%x",
        "ab_x",
        "a\\b",
        "aB-not-lowered",
        "b",
        "e-user",
        "\u{e9}-user",
        "\u{e9}zz",
        "\u{ff}x",
        "\u{10ffff}",
        "\u{10ffff}\u{10ffff}a",
        "\u{d7ff}x",
        "\u{e000}x",
    ];
    for (i, name) in names.iter().enumerate() {
        let user = NewUser { user_name: Some((*name).into()), ..new_user(org.id, &format!("u{i}@a.test")) };
        store.create_user(&user, t0()).await.unwrap();
    }
    store
        .create_user(&NewUser { user_name: Some("abc-other".into()), ..new_user(other.id, "o@b.test") }, t0())
        .await
        .unwrap();
    let window = UserWindow::Offset { offset: 0, sort: None };
    let prefixes = [
        "",
        "a",
        "ab",
        "ab%",
        "ab_",
        "a\\",
        "ab-",
        "ab-not",
        "\u{e9}",
        "e",
        "\u{ff}",
        "\u{10ffff}",
        "\u{10ffff}\u{10ffff}",
        "\u{d7ff}",
        "\u{e000}",
        "z",
    ];
    for prefix in prefixes {
        let condition =
            UserCondition::Text { column: UserColumn::UserName, op: TextOp::Sw, value: prefix.into() };
        let found = store.users_matching(org.id, Some(&condition), window, 100).await.unwrap();
        let mut got: Vec<String> =
            found.users.iter().map(|u| u.user_name.as_deref().unwrap_or_default().to_lowercase()).collect();
        got.sort();
        // userNames are stored lower-cased for matching; the SCIM layer
        // lowers a filter's value the same way.
        let mut want: Vec<String> =
            names.iter().map(|n| n.to_lowercase()).filter(|n| n.starts_with(prefix)).collect();
        want.sort();
        assert_eq!(got, want, "userName sw {prefix:?}");
        assert_eq!(found.total as usize, want.len(), "userName sw {prefix:?}");
    }
    // Email values take the same path.
    let by_email = UserCondition::AnyEmail(EmailCondition::Text {
        field: EmailField::Value,
        op: TextOp::Sw,
        value: "u1".into(),
    });
    let found = store.users_matching(org.id, Some(&by_email), window, 100).await.unwrap();
    // u1, and u10 to u15.
    assert_eq!(found.total, 7);
}

/// `co` and `ew` answer the same whether a trigram index narrows them
/// (SQLite, a substring few users contain) or every user of the
/// organization is read (a common substring, a negation, PostgreSQL): the
/// index only ever decides how fast, never what.
async fn substring_filters_agree_with_a_scan(store: Store) {
    let org = store.create_org("A", true, t0()).await.unwrap();
    let other = store.create_org("B", true, t0()).await.unwrap();
    // More users elsewhere share a substring than the index is asked for
    // (2,000): here it must be answered by reading this organization.
    let mut creates = Vec::new();
    for i in 0..2_100 {
        let store = store.clone();
        let user = new_user(other.id, &format!("common{i}@b.test"));
        creates.push(tokio::spawn(async move { store.create_user(&user, t0()).await.unwrap() }));
    }
    for create in creates {
        create.await.unwrap();
    }
    let mut mine = Vec::new();
    for email in ["common@a.test", "needle-1@a.test", "x.needle@a.test", "ne\"edle@a.test", "other@a.test"] {
        mine.push(store.create_user(&new_user(org.id, email), t0()).await.unwrap());
    }
    // The index catches up (the background task does it every half
    // second, so it may have begun already); then a rename and a deletion
    // are noted and, unless that task is quicker than the next line, not
    // yet indexed: filters must see them all the same. The checks run then
    // and once more after the index has caught up again.
    store.index_pending_trigrams().await.unwrap();

    let renamed = UserUpdate { user_name: Some(Some("needle-2@a.test".into())), ..Default::default() };
    store.update_user(mine[4].id, &renamed, t0()).await.unwrap();
    store.delete_user(mine[2].id).await.unwrap();
    substrings_agree(&store, org.id, &mine).await;
    store.index_pending_trigrams().await.unwrap();
    substrings_agree(&store, org.id, &mine).await;
}

async fn substrings_agree(store: &Store, org: OrgId, mine: &[gatehouse_core::User]) {
    use gatehouse_store::{EmailCondition, EmailField, TextOp, UserColumn, UserCondition};

    let name =
        |op, value: &str| UserCondition::Text { column: UserColumn::UserName, op, value: value.into() };
    let email = |op, value: &str| {
        UserCondition::AnyEmail(EmailCondition::Text { field: EmailField::Value, op, value: value.into() })
    };
    let window = UserWindow::Offset { offset: 0, sort: None };
    let conditions = [
        (name(TextOp::Co, "needle"), 2),
        (name(TextOp::Co, "x.needle"), 0),
        (name(TextOp::Co, "common"), 1),
        (name(TextOp::Ew, "needle-2@a.test"), 1),
        (name(TextOp::Co, "e\"ed"), 1),
        (name(TextOp::Co, "\" or \"*"), 0),
        (name(TextOp::Co, "{user_name} : \"needle\""), 0),
        (email(TextOp::Co, "needle"), 1),
        (email(TextOp::Co, "common"), 1),
        (email(TextOp::Ew, "@a.test"), 4),
        (UserCondition::And(Box::new(name(TextOp::Co, "needle")), Box::new(email(TextOp::Co, "common"))), 0),
        (UserCondition::Or(Box::new(name(TextOp::Co, "needle")), Box::new(email(TextOp::Co, "common"))), 3),
    ];
    for (condition, expected) in conditions {
        let found = store.users_matching(org, Some(&condition), window, 100).await.unwrap();
        // The same condition written so that no index can narrow it.
        let double = UserCondition::Not(Box::new(UserCondition::Not(Box::new(condition.clone()))));
        let scanned = store.users_matching(org, Some(&double), window, 100).await.unwrap();
        let ids = |m: &gatehouse_store::UserMatches| m.users.iter().map(|u| u.id).collect::<Vec<_>>();
        assert_eq!((found.total, ids(&found)), (scanned.total, ids(&scanned)), "{condition:?}");
        assert_eq!(found.total, expected, "{condition:?}");
        assert!(found.users.iter().all(|u| u.org_id == org));
    }
    // Paged through the index as through a scan: keyset and offset.
    let needle = name(TextOp::Co, "needle");
    let first = store.users_matching(org, Some(&needle), UserWindow::After(None), 1).await.unwrap();
    assert_eq!((first.total, first.users.len(), first.more), (2, 1, true));
    let next = UserWindow::After(Some(first.users[0].id));
    let second = store.users_matching(org, Some(&needle), next, 1).await.unwrap();
    assert_eq!((second.users[0].id, second.more), (mine[4].id, false));
    let skip = UserWindow::Offset { offset: 1, sort: None };
    assert_eq!(store.users_matching(org, Some(&needle), skip, 5).await.unwrap().users[0].id, mine[4].id);
}
