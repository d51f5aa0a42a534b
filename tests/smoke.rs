mod common;
use common::db::TestDb;

backend_tests! {
    async fn a_fresh_database_migrates(db: TestDb) {
        let _ = db.store();
    }
}
