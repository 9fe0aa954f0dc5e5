mod common;

async fn register_login_logout(db: &persist::Db) {
    let acct = db
        .accounts()
        .create(&persist::NewAccount {
            email: "Ada@Example.com",
            username: "Ada",
            pass_hash: b"hash",
            created_at: 100,
        })
        .await
        .unwrap();
    let found = db
        .accounts()
        .find_by_email("ada@example.COM")
        .await
        .unwrap();
    assert_eq!(found, acct);
    let s = db
        .sessions()
        .create("tok-123", acct.user_id, 100, 200)
        .await
        .unwrap();
    let got = db.sessions().find_by_token("tok-123").await.unwrap();
    assert_eq!(got, s);
    db.sessions().delete("tok-123").await.unwrap();
    assert!(matches!(
        db.sessions().find_by_token("tok-123").await,
        Err(persist::Error::NotFound(persist::Entity::Session))
    ));
}

conformance!(register_login_logout);
