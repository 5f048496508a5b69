//! Two nodes on one database present the same refresh token at once (a
//! client that retried on another node, or a thief racing its owner).
//! Within one node a batch decides such rows in order; across nodes only the
//! database can. Whichever way the race goes (the second node reads the
//! token already spent, or reads it unspent and loses the spend), the
//! outcome must be the same: one rotation, one reuse, and the session ended,
//! the winner's successor with it.

// Tests stamp real data with the wall clock; the service reads time only
// through its Clock (clippy.toml).
#![allow(clippy::disallowed_methods)]

use chrono::{Duration, Utc};
use gatehouse_core::{AuthMethod, Device, Email, Origin, SessionId};
use gatehouse_store::{NewSession, NewUser, RefreshOutcome, Store};
use gatehouse_testkit::TestDb;

#[tokio::test]
async fn sqlite() {
    let db = TestDb::sqlite();
    one_rotation_wins_across_nodes(db.url()).await;
}

#[tokio::test]
async fn postgres() {
    let Some(db) = TestDb::postgres().await else { return };
    one_rotation_wins_across_nodes(db.url()).await;
}

async fn one_rotation_wins_across_nodes(url: &str) {
    let (one, two) = (Store::open(url).await.unwrap(), Store::open(url).await.unwrap());
    let now = Utc::now();
    let org = one.create_org("Acme", false, now).await.unwrap();
    let user = NewUser {
        email: Some(Email::parse("ada@acme.test").unwrap()),
        display_name: "Ada".into(),
        ..NewUser::member(org.id, Origin::Admin)
    };
    let user = one.create_user(&user, now).await.unwrap();
    for round in 0..40 {
        let session = NewSession {
            id: SessionId::new(),
            user_id: user.id,
            org_id: org.id,
            auth_method: AuthMethod::ExternalRest,
            device: Device::default(),
            expires_at: now + Duration::days(1),
            idp_groups: None,
            browser_token_hash: None,
        };
        let presented = format!("race-{round}");
        one.create_session(&session, &presented, None, now).await.unwrap();
        let (a, b) = (format!("next-{round}-a"), format!("next-{round}-b"));
        let (first, second) = tokio::join!(
            one.rotate_refresh_token(&presented, &a, now),
            two.rotate_refresh_token(&presented, &b, now),
        );
        let outcomes = [first.unwrap(), second.unwrap()];
        let rotated: Vec<usize> =
            (0..2).filter(|i| matches!(outcomes[*i], RefreshOutcome::Rotated { .. })).collect();
        assert_eq!(rotated.len(), 1, "round {round}: one rotation wins: {outcomes:?}");
        let loser = &outcomes[1 - rotated[0]];
        assert!(
            matches!(loser, RefreshOutcome::Reused { session_id } if *session_id == session.id),
            "round {round}: the other is a reuse of the session: {loser:?}"
        );
        assert!(one.get_session(session.id).await.unwrap().revoked_at.is_some(), "round {round}: ended");
        let successor = if rotated[0] == 0 { &a } else { &b };
        assert!(
            matches!(
                two.rotate_refresh_token(successor, "after", now).await.unwrap(),
                RefreshOutcome::Invalid
            ),
            "round {round}: the winner's successor ended with its session"
        );
    }
    one.close().await;
    two.close().await;
}
