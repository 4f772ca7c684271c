//! Login throttling, in memory per instance. Keys are the client address and the (account, address)
//! pair, never the account alone: an attacker can slow their own guesses but cannot lock a victim
//! out from the victim's own address. Buckets refill continuously, so a throttle lasts seconds.
use std::{net::IpAddr, num::NonZeroU32};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::keyed::DefaultKeyedStateStore,
};

use crate::error::AppError;

type KeyedLimiter<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

pub struct LoginThrottle {
    per_address: KeyedLimiter<IpAddr>,
    per_account: KeyedLimiter<(String, IpAddr)>,
    clock: DefaultClock,
}

impl LoginThrottle {
    pub fn new(per_address_per_minute: u32, per_account_per_minute: u32) -> Self {
        let quota = |per_minute: u32| {
            Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN))
        };
        Self {
            per_address: RateLimiter::keyed(quota(per_address_per_minute)),
            per_account: RateLimiter::keyed(quota(per_account_per_minute)),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one login attempt, refusing it when either bucket is empty.
    pub fn check(&self, email: &str, address: IpAddr) -> Result<(), AppError> {
        let refused = |not_until: governor::NotUntil<_>| {
            let wait = not_until.wait_time_from(self.clock.now());
            AppError::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            }
        };
        self.per_address.check_key(&address).map_err(refused)?;
        self.per_account
            .check_key(&(email.to_string(), address))
            .map_err(refused)?;
        Ok(())
    }

    /// Forgets buckets that are full again, so memory stays bounded by recent attackers.
    pub fn forget_idle(&self) {
        self.per_address.retain_recent();
        self.per_address.shrink_to_fit();
        self.per_account.retain_recent();
        self.per_account.shrink_to_fit();
    }
}
