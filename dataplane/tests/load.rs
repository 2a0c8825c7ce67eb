use ferry_dataplane::datapath::Datapath;

#[test]
fn loads() {
    let dp = Datapath::load().unwrap();
    drop(dp);
}
