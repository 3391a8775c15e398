//! Twenty handlers in one projection: the subscribed-to list keeps all of them, in order.

use projections::{Envelope, Event, Projection, projection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event01;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event02;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event03;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event04;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event05;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event06;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event07;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event08;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event09;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event10;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event11;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event12;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event13;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event14;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event15;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event16;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event17;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event18;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event19;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Event20;

#[derive(Default)]
struct Counts {
    seen: usize,
}

#[projection]
impl Counts {
    #[handles(Event01)]
    async fn on_01(&mut self, _event: &Envelope<Event01>) {
        self.seen += 1;
    }

    #[handles(Event02)]
    async fn on_02(&mut self, _event: &Envelope<Event02>) {
        self.seen += 1;
    }

    #[handles(Event03)]
    async fn on_03(&mut self, _event: &Envelope<Event03>) {
        self.seen += 1;
    }

    #[handles(Event04)]
    async fn on_04(&mut self, _event: &Envelope<Event04>) {
        self.seen += 1;
    }

    #[handles(Event05)]
    async fn on_05(&mut self, _event: &Envelope<Event05>) {
        self.seen += 1;
    }

    #[handles(Event06)]
    async fn on_06(&mut self, _event: &Envelope<Event06>) {
        self.seen += 1;
    }

    #[handles(Event07)]
    async fn on_07(&mut self, _event: &Envelope<Event07>) {
        self.seen += 1;
    }

    #[handles(Event08)]
    async fn on_08(&mut self, _event: &Envelope<Event08>) {
        self.seen += 1;
    }

    #[handles(Event09)]
    async fn on_09(&mut self, _event: &Envelope<Event09>) {
        self.seen += 1;
    }

    #[handles(Event10)]
    async fn on_10(&mut self, _event: &Envelope<Event10>) {
        self.seen += 1;
    }

    #[handles(Event11)]
    async fn on_11(&mut self, _event: &Envelope<Event11>) {
        self.seen += 1;
    }

    #[handles(Event12)]
    async fn on_12(&mut self, _event: &Envelope<Event12>) {
        self.seen += 1;
    }

    #[handles(Event13)]
    async fn on_13(&mut self, _event: &Envelope<Event13>) {
        self.seen += 1;
    }

    #[handles(Event14)]
    async fn on_14(&mut self, _event: &Envelope<Event14>) {
        self.seen += 1;
    }

    #[handles(Event15)]
    async fn on_15(&mut self, _event: &Envelope<Event15>) {
        self.seen += 1;
    }

    #[handles(Event16)]
    async fn on_16(&mut self, _event: &Envelope<Event16>) {
        self.seen += 1;
    }

    #[handles(Event17)]
    async fn on_17(&mut self, _event: &Envelope<Event17>) {
        self.seen += 1;
    }

    #[handles(Event18)]
    async fn on_18(&mut self, _event: &Envelope<Event18>) {
        self.seen += 1;
    }

    #[handles(Event19)]
    async fn on_19(&mut self, _event: &Envelope<Event19>) {
        self.seen += 1;
    }

    #[handles(Event20)]
    async fn on_20(&mut self, _event: &Envelope<Event20>) {
        self.seen += 1;
    }
}

fn main() {
    let counts = Counts::default();
    let subscribed = Projection::subscribed_to(&counts);
    assert_eq!(subscribed.len(), 20);
    let expected: Vec<String> = (1..=20).map(|i| format!("Event{i:02}")).collect();
    assert_eq!(subscribed, expected);
    assert_eq!(Projection::handlers(&counts).len(), 20);
    assert_eq!(counts.seen, 0);
}
