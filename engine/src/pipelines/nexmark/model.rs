//! The Nexmark event model and generator, following the public Nexmark generator
//! (Apache Beam's `NexmarkGenerator`, also used by the Flink Nexmark project): event
//! `n` is a person, an auction or a bid by `n mod 50` (proportions 1 : 3 : 46); ids
//! start at 1000 and are derived from `n` alone (`last_base0_person_id` …); bids go to
//! a hot auction with probability 1/2 (every 100th auction) and come from a hot bidder
//! with probability 3/4; auctions come from a hot seller with probability 3/4; prices
//! are `round(10^(6·u)·100)` cents; event time is `base + n · inter-event delay`.
//! Every event draws from its own RNG seeded by (seed, n), so the stream is the same
//! whatever the partitioning: partition `p` of `P` generates `n = p, p+P, …`.

use crate::keys::stable_hash;
use crate::splitmix::SplitMix64;

/// Person : auction : bid proportions.
pub const PERSON_PROPORTION: u64 = 1;
/// Auctions per proportion period.
pub const AUCTION_PROPORTION: u64 = 3;
/// Bids per proportion period.
pub const BID_PROPORTION: u64 = 46;
/// Events per proportion period.
pub const TOTAL_PROPORTION: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;
/// The first person id.
pub const FIRST_PERSON_ID: u64 = 1000;
/// The first auction id.
pub const FIRST_AUCTION_ID: u64 = 1000;
/// The first category id.
pub const FIRST_CATEGORY_ID: u64 = 10;
const NUM_CATEGORIES: u64 = 5;
const NUM_ACTIVE_PEOPLE: u64 = 1000;
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
const PERSON_ID_LEAD: u64 = 10;
const AUCTION_ID_LEAD: u64 = 10;
const HOT_AUCTION_RATIO: u64 = 100;
const HOT_SELLER_RATIO: u64 = 100;
const HOT_BIDDER_RATIO: u64 = 100;
const HOT_AUCTION_PROBABILITY_INV: u64 = 2;
const HOT_SELLER_PROBABILITY_INV: u64 = 4;
const HOT_BIDDER_PROBABILITY_INV: u64 = 4;
const AVG_PERSON_BYTES: usize = 200;
const AVG_AUCTION_BYTES: usize = 500;
const AVG_BID_BYTES: usize = 100;

const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];

/// A new user.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Person {
    /// Person id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// Credit card number.
    pub credit_card: String,
    /// City.
    pub city: String,
    /// State.
    pub state: String,
    /// Event time (ms).
    pub date_time: u64,
    /// Padding to the average event size.
    pub extra: String,
}

/// A new auction.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Auction {
    /// Auction id.
    pub id: u64,
    /// Item name.
    pub item_name: String,
    /// Description.
    pub description: String,
    /// Initial bid (cents).
    pub initial_bid: u64,
    /// Reserve price (cents).
    pub reserve: u64,
    /// Event time (ms).
    pub date_time: u64,
    /// When the auction ends (ms).
    pub expires: u64,
    /// Seller (a person id).
    pub seller: u64,
    /// Category id.
    pub category: u64,
    /// Padding to the average event size.
    pub extra: String,
}

/// A bid on an auction.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Bid {
    /// Auction id.
    pub auction: u64,
    /// Bidder (a person id).
    pub bidder: u64,
    /// Price (cents).
    pub price: u64,
    /// Event time (ms).
    pub date_time: u64,
    /// Padding to the average event size.
    pub extra: String,
}

/// One Nexmark event.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Event {
    /// A person.
    Person(Person),
    /// An auction.
    Auction(Auction),
    /// A bid.
    Bid(Bid),
}

impl Event {
    /// The event time (ms).
    pub fn date_time(&self) -> u64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }
}

/// A small deterministic RNG (splitmix64), one per event.
struct Rng(SplitMix64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        self.0.next_unit()
    }
    fn string(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| (b'a' + self.below(26) as u8) as char)
            .collect()
    }
}

/// How event times are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NexmarkParams {
    /// Seed of every event's RNG.
    pub seed: u64,
    /// Event time of event 0 (ms).
    pub base_time_ms: u64,
    /// Event-time rate: events per second of event time (inter-event delay = 1/rate).
    pub event_rate_eps: u64,
}

/// The base-0 id of the last person created at or before event `n`.
pub fn last_base0_person_id(n: u64) -> u64 {
    let epoch = n / TOTAL_PROPORTION;
    // Beam's rule, kept general although the person proportion is 1.
    #[allow(clippy::unnecessary_min_or_max)]
    let offset = (n % TOTAL_PROPORTION).min(PERSON_PROPORTION - 1);
    epoch * PERSON_PROPORTION + offset
}

/// The base-0 id of the last auction created at or before event `n`.
pub fn last_base0_auction_id(n: u64) -> u64 {
    let mut epoch = n / TOTAL_PROPORTION;
    let mut offset = n % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        // Before this epoch's first auction: the last one of the previous epoch.
        if epoch == 0 {
            return 0;
        }
        epoch -= 1;
        offset = AUCTION_PROPORTION - 1;
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

fn next_base0_person_id(n: u64, rng: &mut Rng) -> u64 {
    let people = last_base0_person_id(n) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + rng.below(active + PERSON_ID_LEAD)
}

fn next_base0_auction_id(n: u64, rng: &mut Rng) -> u64 {
    let max = last_base0_auction_id(n);
    let min = max.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
    min + rng.below(max - min + 1 + AUCTION_ID_LEAD)
}

fn next_price(rng: &mut Rng) -> u64 {
    (10f64.powf(rng.unit() * 6.0) * 100.0).round() as u64
}

fn extra(rng: &mut Rng, current: usize, average: usize) -> String {
    if current > average {
        return String::new();
    }
    let avg = average - current;
    let delta = avg / 5;
    let len = avg - delta + rng.below(2 * delta as u64 + 1) as usize;
    rng.string(len)
}

impl NexmarkParams {
    /// Event time of event `n` (ms).
    pub fn timestamp(&self, n: u64) -> u64 {
        self.base_time_ms + (u128::from(n) * 1_000 / u128::from(self.event_rate_eps.max(1))) as u64
    }

    /// Event `n`.
    pub fn event(&self, n: u64) -> Event {
        self.event_at(n, self.timestamp(n))
    }

    /// Event `n` with event time `ts` (ms) instead of the computed one (event time that
    /// follows the job clock).
    pub fn event_at(&self, n: u64, ts: u64) -> Event {
        let mut rng = Rng(SplitMix64(stable_hash(&(self.seed, n))));
        let rem = n % TOTAL_PROPORTION;
        if rem < PERSON_PROPORTION {
            Event::Person(self.person(n, ts, &mut rng))
        } else if rem < PERSON_PROPORTION + AUCTION_PROPORTION {
            Event::Auction(self.auction(n, ts, &mut rng))
        } else {
            Event::Bid(bid(n, ts, &mut rng))
        }
    }

    fn person(&self, n: u64, ts: u64, rng: &mut Rng) -> Person {
        let id = last_base0_person_id(n) + FIRST_PERSON_ID;
        let name = format!(
            "{} {}",
            FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize],
            LAST_NAMES[rng.below(LAST_NAMES.len() as u64) as usize]
        );
        let email = format!("{}@{}.com", rng.string(7), rng.string(5));
        let credit_card = (0..4)
            .map(|_| format!("{:04}", rng.below(10_000)))
            .collect::<Vec<_>>()
            .join(" ");
        let city = US_CITIES[rng.below(US_CITIES.len() as u64) as usize].to_string();
        let state = US_STATES[rng.below(US_STATES.len() as u64) as usize].to_string();
        let size = 8 + name.len() + email.len() + credit_card.len() + city.len() + state.len() + 8;
        Person {
            id,
            extra: extra(rng, size, AVG_PERSON_BYTES),
            name,
            email,
            credit_card,
            city,
            state,
            date_time: ts,
        }
    }

    fn auction(&self, n: u64, ts: u64, rng: &mut Rng) -> Auction {
        let id = last_base0_auction_id(n) + FIRST_AUCTION_ID;
        let seller = if rng.below(HOT_SELLER_PROBABILITY_INV) > 0 {
            (last_base0_person_id(n) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
        } else {
            next_base0_person_id(n, rng)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES);
        let initial_bid = next_price(rng);
        let reserve = initial_bid + next_price(rng);
        // Auctions last until about as many auctions later are in flight (Beam's
        // `nextAuctionLengthMs`).
        let events_for_auctions = NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION / AUCTION_PROPORTION;
        let horizon = self.timestamp(n + events_for_auctions) - ts;
        let expires = ts + 1 + rng.below((horizon * 2).max(1));
        let item_name = rng.string(20);
        let description = rng.string(100);
        let size = 8 + item_name.len() + description.len() + 8 * 6;
        Auction {
            id,
            extra: extra(rng, size, AVG_AUCTION_BYTES),
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: ts,
            expires,
            seller,
            category,
        }
    }
}

fn bid(n: u64, ts: u64, rng: &mut Rng) -> Bid {
    let auction = if rng.below(HOT_AUCTION_PROBABILITY_INV) > 0 {
        (last_base0_auction_id(n) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
    } else {
        next_base0_auction_id(n, rng)
    } + FIRST_AUCTION_ID;
    let bidder = if rng.below(HOT_BIDDER_PROBABILITY_INV) > 0 {
        (last_base0_person_id(n) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
    } else {
        next_base0_person_id(n, rng)
    } + FIRST_PERSON_ID;
    let price = next_price(rng);
    Bid {
        auction,
        bidder,
        price,
        date_time: ts,
        extra: extra(rng, 8 * 4, AVG_BID_BYTES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> NexmarkParams {
        NexmarkParams {
            seed: 7,
            base_time_ms: 0,
            event_rate_eps: 10_000,
        }
    }

    #[test]
    fn proportions_ids_and_event_times_follow_the_nexmark_rules() {
        let p = params();
        let (mut people, mut auctions, mut bids) = (0, 0, 0);
        let mut hot = 0;
        for n in 0..50_000u64 {
            let e = p.event(n);
            assert_eq!(e, p.event(n), "deterministic per event");
            assert_eq!(
                e.date_time(),
                n / 10,
                "10 000 events per second of event time"
            );
            match e {
                Event::Person(x) => {
                    assert_eq!(x.id, FIRST_PERSON_ID + people);
                    people += 1;
                }
                Event::Auction(a) => {
                    assert_eq!(a.id, FIRST_AUCTION_ID + auctions);
                    assert!((FIRST_CATEGORY_ID..FIRST_CATEGORY_ID + 5).contains(&a.category));
                    // Like bidders, sellers may be up to `PERSON_ID_LEAD` ids ahead.
                    assert!(a.seller < FIRST_PERSON_ID + people + PERSON_ID_LEAD);
                    auctions += 1;
                }
                Event::Bid(b) => {
                    assert!(b.auction < FIRST_AUCTION_ID + auctions + AUCTION_ID_LEAD);
                    if (b.auction - FIRST_AUCTION_ID) % HOT_AUCTION_RATIO == 0 {
                        hot += 1;
                    }
                    bids += 1;
                }
            }
        }
        assert_eq!((people, auctions, bids), (1_000, 3_000, 46_000));
        // Half the bids go to a hot auction (plus the few cold picks that land on one).
        assert!(hot > bids / 2 - bids / 20, "hot bids {hot} of {bids}");
    }

    #[test]
    fn last_ids_count_what_was_created_before() {
        assert_eq!(last_base0_person_id(0), 0);
        assert_eq!(last_base0_person_id(49), 0);
        assert_eq!(last_base0_person_id(50), 1);
        assert_eq!(last_base0_auction_id(1), 0);
        assert_eq!(last_base0_auction_id(3), 2);
        assert_eq!(last_base0_auction_id(49), 2);
        assert_eq!(last_base0_auction_id(50), 2);
        assert_eq!(last_base0_auction_id(51), 3);
    }
}
