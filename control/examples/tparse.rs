fn main() {

    let text = std::fs::read_to_string("/tmp/big.toml").unwrap();
    let t0 = std::time::Instant::now();
    let c = ferry::config::Config::parse(std::path::Path::new("big.toml"), &text).unwrap();
    let t1 = t0.elapsed();
    let tbl = c.table_toml();
    let t2 = std::time::Instant::now();
    let c2 = c.with_table(std::path::Path::new("t"), &tbl).unwrap();
    let t3 = t2.elapsed();
    let t4 = std::time::Instant::now();
    let _tables = c2.tables();
    let t5 = t4.elapsed();
    let t6 = std::time::Instant::now();
    let v: Vec<toml::Value> = tbl.split("[[tunnel]]").skip(1).map(|s| toml::from_str(s).unwrap()).collect();
    let t7 = t6.elapsed();
    println!("parse {t1:?} with_table {t3:?} tables {t5:?} raw-toml-chunks {t7:?} {}", v.len());
}
#[allow(dead_code)]
fn ws() {
    let text = std::fs::read_to_string("/tmp/big.toml").unwrap();
    let blank: String = text.chars().map(|c| if c == '\n' { c } else { ' ' }).collect();
    let t = std::time::Instant::now();
    let _v: toml::Table = toml::from_str(&blank).unwrap();
    println!("blank parse {:?}", t.elapsed());
}
