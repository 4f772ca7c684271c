//! What the bench may put beside PostgreSQL's primary (`--through-pgbouncer`, `--read-replica`):
//! a PgBouncer in front of it, a streaming standby of it, and what each spends.
use std::time::Duration;

use anyhow::Context;
use testkit::{pg_cluster::Cluster, pgbouncer::PgBouncer};

use super::BenchOptions;
use crate::cpu::{process_time, server_time};

#[derive(Default)]
pub struct Beside {
    bouncer: Option<PgBouncer>,
    standby: Option<Cluster>,
}

impl Beside {
    /// Starts what `options` asks for, and adds to `env` what the instances then need.
    pub async fn set_up(
        options: &BenchOptions,
        env: &mut Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let mut beside = Self::default();
        if options.through_pgbouncer {
            // As many server connections as the instances' pools hold: the pooler adds its hop,
            // not a queue.
            let servers = options.pool_size * options.instance_ports.len() as u32;
            beside.bouncer =
                Some(PgBouncer::start(&options.database_url, "transaction", servers).await?);
            env.push(("DATABASE_POOL_MODE".into(), "transaction".into()));
            env.push(("DATABASE_DIRECT_URL".into(), options.database_url.clone()));
        }
        if options.read_replica {
            let mut read_url = reqwest::Url::parse(&options.database_url)?;
            let port = read_url
                .port()
                .context("--read-replica needs the database URL's port")?;
            let standby = Cluster::standby_of_port(port).await?;
            read_url
                .set_port(Some(standby.port()))
                .map_err(|()| anyhow::anyhow!("cannot set the standby's port"))?;
            env.push(("DATABASE_READ_URL".into(), read_url.to_string()));
            beside.standby = Some(standby);
        }
        Ok(beside)
    }

    pub fn any(&self) -> bool {
        self.bouncer.is_some() || self.standby.is_some()
    }

    /// Where the instances' `DATABASE_URL` points: the pooler, or `direct`.
    pub fn instance_database_url(&self, direct: &str) -> String {
        match &self.bouncer {
            Some(bouncer) => bouncer.url(direct),
            None => direct.to_string(),
        }
    }

    pub fn print_header(&self) {
        if let Some(bouncer) = &self.bouncer {
            println!(
                "through PgBouncer (transaction mode) on port {}; pgbench connects directly",
                bouncer.port()
            );
        }
        if let Some(standby) = &self.standby {
            println!(
                "lag-tolerant reads on a streaming standby on port {}",
                standby.port()
            );
        }
    }

    /// CPU spent so far by the standby and the pooler.
    pub fn time(&self) -> SideTime {
        SideTime {
            standby: self
                .standby
                .as_ref()
                .and_then(Cluster::postmaster_pid)
                .and_then(server_time)
                .unwrap_or_default(),
            pooler: self
                .bouncer
                .as_ref()
                .and_then(PgBouncer::pid)
                .and_then(|pid| process_time(&pid.to_string()))
                .map(|time| time.own)
                .unwrap_or_default(),
        }
    }
}

/// CPU of the standby (its postmaster and backends, WAL replay included) and of the pooler.
#[derive(Debug, Clone, Copy, Default)]
pub struct SideTime {
    pub standby: Duration,
    pub pooler: Duration,
}

impl std::ops::Sub for SideTime {
    type Output = SideTime;

    fn sub(self, earlier: SideTime) -> SideTime {
        SideTime {
            standby: self.standby.saturating_sub(earlier.standby),
            pooler: self.pooler.saturating_sub(earlier.pooler),
        }
    }
}

impl std::ops::AddAssign for SideTime {
    fn add_assign(&mut self, other: SideTime) {
        self.standby += other.standby;
        self.pooler += other.pooler;
    }
}
