//! The testkit against the real, installed PostgreSQL and Redis.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use tickmesh_testkit::{Postgres, Redis};

fn accepts_connections(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn postgres_answers_queries_in_the_tickmesh_database() {
    let pg = Postgres::start().expect("start postgres");
    assert_eq!(pg.psql("select 1+1").unwrap(), "2");
    assert_eq!(pg.psql("select current_database()").unwrap(), "tickmesh");
    assert_eq!(
        pg.url(),
        format!("postgres://tickmesh@127.0.0.1:{}/tickmesh", pg.port())
    );
}

#[test]
fn a_failing_statement_is_an_error_that_quotes_postgres() {
    let pg = Postgres::start().expect("start postgres");
    let err = pg.psql("select * from no_such_table").unwrap_err();
    assert!(err.to_string().contains("no_such_table"), "{err}");
}

#[test]
fn postgres_keeps_its_rows_across_a_restart() {
    let mut pg = Postgres::start().expect("start postgres");
    let port = pg.port();
    pg.psql("create table ticks (symbol text primary key, price numeric not null)")
        .unwrap();
    pg.psql("insert into ticks values ('AAPL', 189.5)").unwrap();

    pg.stop();
    assert!(!accepts_connections(port), "stopped postgres still listens");
    assert!(pg.data_dir().join("PG_VERSION").exists());

    pg.restart().expect("restart postgres");
    assert_eq!(pg.port(), port);
    assert_eq!(
        pg.psql("select symbol || '=' || price from ticks").unwrap(),
        "AAPL=189.5"
    );
}

#[test]
fn dropping_postgres_stops_it_and_removes_its_directory() {
    let pg = Postgres::start().expect("start postgres");
    let (dir, port, pid) = (pg.dir().to_path_buf(), pg.port(), pg.pid().unwrap());
    assert!(pg.data_dir().exists());
    assert!(accepts_connections(port));

    drop(pg);
    assert!(!dir.exists(), "{} survived the drop", dir.display());
    assert!(!accepts_connections(port), "port {port} still accepts");
    assert!(!process_exists(pid), "postmaster {pid} survived the drop");
}

#[test]
fn two_postgres_servers_run_side_by_side_on_their_own_ports() {
    let a = Postgres::start().expect("start postgres a");
    let b = Postgres::start().expect("start postgres b");
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    a.psql("create table only_in_a (x int)").unwrap();
    assert!(b.psql("select * from only_in_a").is_err());
}

#[test]
fn redis_round_trips_a_value() {
    let redis = Redis::start().expect("start redis");
    assert_eq!(redis.command(&["SET", "tick:AAPL", "189.5"]).unwrap(), "OK");
    assert_eq!(redis.command(&["GET", "tick:AAPL"]).unwrap(), "189.5");
    assert_eq!(redis.command(&["GET", "tick:MSFT"]).unwrap(), "(nil)");
    assert_eq!(redis.command(&["INCR", "count"]).unwrap(), "1");
    assert!(redis.command(&["NO-SUCH-COMMAND"]).is_err());
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/", redis.port()));
}

#[test]
fn redis_answers_again_after_a_restart() {
    let mut redis = Redis::start().expect("start redis");
    let port = redis.port();
    redis.command(&["SET", "k", "v"]).unwrap();

    redis.stop();
    assert!(!accepts_connections(port), "stopped redis still listens");

    redis.restart().expect("restart redis");
    assert_eq!(redis.port(), port);
    assert_eq!(redis.command(&["PING"]).unwrap(), "PONG");
}

#[test]
fn dropping_redis_stops_it_and_removes_its_directory() {
    let redis = Redis::start().expect("start redis");
    let (dir, port, pid) = (
        redis.dir().to_path_buf(),
        redis.port(),
        redis.pid().unwrap(),
    );
    assert!(dir.exists());

    drop(redis);
    assert!(!dir.exists(), "{} survived the drop", dir.display());
    assert!(!accepts_connections(port), "port {port} still accepts");
    assert!(!process_exists(pid), "redis {pid} survived the drop");
}
