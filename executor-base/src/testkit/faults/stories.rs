//! The scenarios' stories: a fault at one moment of a build, the engine back after a
//! while, breakers opened then half-open, a 429 storm, a start cut half way.

use std::time::{Duration, Instant};

use super::run::{Run, harmless};
use super::{Outcome, Scenario, When};
use crate::config::StartConfig;
use crate::engine::refused_by_breaker;
use crate::error::Error;
use crate::testkit::proxy::FaultMode;

impl Run {
    pub(super) async fn play(&self, sc: &Scenario) -> Outcome {
        let (answered, call) = match sc {
            Scenario::Fault(m, w) => self.fault(m, *w).await,
            Scenario::BackAfter(d) => self.back_after(*d).await,
            Scenario::HalfOpen => self.half_open().await,
            Scenario::Storm429 => self.storm().await,
            Scenario::CrashMidStart(d) => self.crash_mid_start(*d).await,
        };
        self.proxy.set(FaultMode::Pass);
        let recovery = self.recovers(9).await;
        Outcome {
            scenario: self.name.clone(),
            answered,
            call,
            recovery,
        }
    }

    fn answer<T>(&self, m: &FaultMode, what: &str, r: &Result<T, Error>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) => {
                self.check_fault_error(m, what, e);
                format!("{:?}", e.kind())
            }
        }
    }

    async fn fault(&self, m: &FaultMode, w: When) -> (String, Duration) {
        let b = self.config(0);
        let harmless = harmless(m, &self.cfg);
        let out = match w {
            When::AtStart => {
                self.proxy.set(m.clone());
                let (r, d) = self.timed("start", self.exec.start(&b)).await;
                let a = self.answer(m, "start", &r);
                if harmless && r.is_err() {
                    broken!(self.name, "start failed under a harmless delay: {a}");
                }
                self.proxy.set(FaultMode::Pass);
                if r.is_ok() {
                    self.wait_running_or_lost(&b, !harmless).await;
                }
                (a, d)
            }
            When::MidBuild => {
                self.start_ok(&b).await;
                self.proxy.set(m.clone());
                let (r, d) = self.timed("status", self.exec.status(&b.to_stop())).await;
                let mut lost = false;
                let a = match &r {
                    Ok(s) if self.lost_to_fault(s, !harmless) => {
                        lost = true;
                        "lost with the connection".to_string()
                    }
                    Ok(s) => {
                        self.look_status(s);
                        if s.is_terminal() {
                            broken!(self.name, "a fault mid-build made the build {s}");
                        }
                        format!("ok ({})", s.phase)
                    }
                    Err(e) => {
                        if harmless {
                            broken!(self.name, "status failed under a harmless delay: {e}");
                        }
                        self.answer(m, "status", &r)
                    }
                };
                self.proxy.set(FaultMode::Pass);
                // The build kept running through the fault (or, where the backend
                // observes it through the broken connection, is known lost).
                if !lost && !self.wait_running_or_lost(&b, !harmless).await {
                    (format!("{a}, then lost with the connection"), d)
                } else {
                    (a, d)
                }
            }
            When::AtStop => {
                self.start_ok(&b).await;
                self.proxy.set(m.clone());
                let before = (self.proxy.accepted(), self.proxy.received());
                let (r, d) = self.timed("stop", self.exec.stop(&b.to_stop())).await;
                let a = self.answer(m, "stop", &r);
                if harmless && r.is_err() {
                    broken!(self.name, "stop failed under a harmless delay: {a}");
                }
                if *m != FaultMode::Refuse
                    && (self.proxy.accepted(), self.proxy.received()) == before
                {
                    broken!(
                        self.name,
                        "stop was not attempted (nothing reached the engine)"
                    );
                }
                self.proxy.set(FaultMode::Pass);
                (a, d)
            }
        };
        self.stop_clean(&b).await;
        self.no_orphans(&[&b]).await;
        out
    }

    async fn back_after(&self, after: Duration) -> (String, Duration) {
        let b = self.config(0);
        self.proxy.set(FaultMode::Refuse);
        let proxy = self.proxy.clone();
        let back = tokio::spawn(async move {
            tokio::time::sleep(after).await;
            proxy.set(FaultMode::Pass);
        });
        let (r, d) = self.timed("start", self.exec.start(&b)).await;
        let a = self.answer(&FaultMode::Refuse, "start", &r);
        let _ = back.await;
        if r.is_ok() {
            self.wait_running(&b).await;
        }
        self.stop_clean(&b).await;
        self.no_orphans(&[&b]).await;
        (a, d)
    }

    async fn half_open(&self) -> (String, Duration) {
        let m = if self.cfg.http {
            FaultMode::status(503)
        } else {
            FaultMode::CutAfter(0)
        };
        // A build that runs before the engine starts failing: its stop must still be
        // sent once every breaker is open.
        let running = self.config(9);
        self.start_ok(&running).await;
        self.proxy.set(m.clone());
        let mut builds = Vec::new();
        let mut last = String::new();
        let mut took = Duration::ZERO;
        let mut opened = false;
        for n in 0..8 {
            let b = self.config(n);
            let (r, d) = self.timed("start", self.exec.start(&b)).await;
            last = self.answer(&m, "start", &r);
            took = d;
            if r.is_ok() {
                broken!(self.name, "a start succeeded while every call fails");
            }
            builds.push(b);
            if r.as_ref().err().is_some_and(refused_by_breaker) {
                opened = true;
                break;
            }
        }
        if !opened {
            broken!(self.name, "8 failing starts opened no breaker");
        }
        // A stop goes to the engine however open the breakers are.
        let before = (self.proxy.accepted(), self.proxy.received());
        let (r, _) = self.timed("stop", self.exec.stop(&running.to_stop())).await;
        let _ = self.answer(&m, "stop", &r);
        if (self.proxy.accepted(), self.proxy.received()) == before {
            broken!(self.name, "a stop with the breakers open was not attempted");
        }
        self.proxy.set(FaultMode::Pass);
        builds.push(running);
        for b in &builds {
            self.stop_clean(b).await;
        }
        let refs: Vec<&StartConfig> = builds.iter().collect();
        self.no_orphans(&refs).await;
        (format!("{last}, breaker opened"), took)
    }

    async fn storm(&self) -> (String, Duration) {
        let b = self.config(0);
        let m = FaultMode::too_many_requests(1);
        self.proxy.script(std::iter::repeat_n(m.clone(), 20));
        let (r, d) = self.timed("start", self.exec.start(&b)).await;
        let a = self.answer(&m, "start", &r);
        self.proxy.script([]);
        if r.is_ok() {
            self.wait_running(&b).await;
        }
        self.stop_clean(&b).await;
        self.no_orphans(&[&b]).await;
        (a, d)
    }

    async fn crash_mid_start(&self, after: Duration) -> (String, Duration) {
        let b = self.config(0);
        let exec = self.exec.clone();
        let bb = b.clone();
        let t = Instant::now();
        let task = tokio::spawn(async move { exec.start(&bb).await });
        tokio::time::sleep(after).await;
        task.abort();
        let a = match task.await {
            Ok(Ok(())) => "finished before the kill".to_string(),
            Ok(Err(e)) => {
                self.look_error(&e);
                format!("{:?}", e.kind())
            }
            Err(_) => "killed".to_string(),
        };
        let d = t.elapsed();
        self.stop_clean(&b).await;
        self.no_orphans(&[&b]).await;
        (a, d)
    }
}
