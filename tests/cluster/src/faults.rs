//! Fault injection rules consulted by the test API server before it handles a request.

use std::time::Duration;

use http::Method;

/// Selects requests by HTTP method and resource.
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    method: Option<Method>,
    resource: Option<String>,
}

impl RequestMatch {
    /// Matches every request.
    pub fn any() -> Self {
        Self::default()
    }

    /// Matches requests with this HTTP method (`GET` covers get, list and watch).
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Matches requests for this resource: a plural name such as `pods`, optionally with a
    /// subresource (`pods/status`, `pods/binding`). A bare name also matches its subresources.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    pub(crate) fn matches(&self, method: &Method, resource: &str, sub: Option<&str>) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        match &self.resource {
            None => true,
            Some(want) => match want.split_once('/') {
                Some((r, s)) => r == resource && Some(s) == sub,
                None => want == resource,
            },
        }
    }
}

/// The error an injected failure answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 409 Conflict.
    Conflict,
    /// 429 TooManyRequests (with `Retry-After: 1`).
    TooManyRequests,
    /// 500 InternalError.
    InternalError,
}

#[derive(Debug)]
struct FailRule {
    filter: RequestMatch,
    nth: u64,
    times: u64,
    seen: u64,
    fault: Fault,
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    fails: Vec<FailRule>,
    delays: Vec<(RequestMatch, Duration)>,
}

impl Faults {
    pub fn fail(&mut self, filter: RequestMatch, nth: u64, times: u64, fault: Fault) {
        self.fails.push(FailRule {
            filter,
            nth: nth.max(1),
            times: times.max(1),
            seen: 0,
            fault,
        });
    }

    pub fn delay(&mut self, filter: RequestMatch, delay: Duration) {
        self.delays.push((filter, delay));
    }

    pub fn clear(&mut self) {
        self.fails.clear();
        self.delays.clear();
    }

    /// Counts the request against every failure rule; returns the fault to answer with, if any.
    pub fn check(
        &mut self,
        method: &Method,
        resource: &str,
        sub: Option<&str>,
    ) -> (Option<Fault>, Duration) {
        let mut hit = None;
        for rule in &mut self.fails {
            if rule.filter.matches(method, resource, sub) {
                rule.seen += 1;
                if hit.is_none() && rule.seen >= rule.nth && rule.seen < rule.nth + rule.times {
                    hit = Some(rule.fault);
                }
            }
        }
        self.fails.retain(|r| r.seen < r.nth + r.times - 1);
        let delay = self
            .delays
            .iter()
            .filter(|(f, _)| f.matches(method, resource, sub))
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default();
        (hit, delay)
    }
}
