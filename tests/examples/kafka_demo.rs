//! A Kafka topic to try Kappa's Kafka source on, without a Kafka: librdkafka's mock cluster (the real Kafka protocol on
//! a loopback port, in this process) with a topic `clicks` of two partitions, and a producer that sends one click per
//! interval, alternating partitions, with a message that is not JSON now and then.
//!
//! Usage: `kafka_demo [INTERVAL_MS]` (default 500). It prints the brokers' address (`127.0.0.1:PORT`), then produces
//! until killed. Point a pipeline at it:
//!
//! ```toml
//! [[source]]
//! name = "clicks"
//! kind = "kafka"
//! brokers = "127.0.0.1:PORT"
//! topic = "clicks"
//! ```

use std::io::Write as _;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn main() {
    let interval = std::env::args()
        .nth(1)
        .map_or(Ok(500), |a| a.parse::<u64>())
        .unwrap_or_else(|_| {
            eprintln!("usage: kafka_demo [INTERVAL_MS]");
            std::process::exit(2);
        });
    let cluster = MockCluster::new(1).expect("a mock cluster");
    cluster
        .create_topic("clicks", 2, 1)
        .expect("the topic `clicks`");
    let brokers = cluster.bootstrap_servers();
    println!("{brokers}");
    std::io::stdout().flush().expect("stdout");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("a producer");
    let pages = ["home", "cart", "checkout", "search", "product"];
    for i in 0u64.. {
        let partition = i32::from(i % 2 == 1);
        let value = if i % 25 == 24 {
            "this message is not JSON".to_owned()
        } else {
            format!(
                "{{\"user\":\"u{}\",\"page\":\"{}\",\"n\":{i}}}",
                i % 7,
                pages[(i % 5) as usize]
            )
        };
        let key = format!("u{}", i % 7);
        if let Err((e, _)) = producer.send(
            BaseRecord::to("clicks")
                .partition(partition)
                .key(&key)
                .payload(&value),
        ) {
            eprintln!("produce: {e}");
        }
        producer.poll(Duration::ZERO);
        let _ = producer.flush(Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(interval));
    }
}
