//! Timestamps of ELB responses (`2015-03-19T03:24:02.650Z`) and the store (milliseconds since
//! the epoch). SigV4's `X-Amz-Date` form and the calendar arithmetic live in `elb_sigv4::time`;
//! they are re-exported here for the callers that format both.

pub use elb_sigv4::time::{format_amz_date, parse_amz_date};

use std::time::{SystemTime, UNIX_EPOCH};

use elb_sigv4::time::UtcTime;

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// `2015-03-19T03:24:02.650Z`, the timestamp form of ELB responses.
pub fn format_iso8601_millis(millis: i64) -> String {
    let t = UtcTime::from_unix(millis.div_euclid(1000));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        millis.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_timestamps() {
        let secs = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(
            format_iso8601_millis(secs * 1000 + 650),
            "2015-08-30T12:36:00.650Z"
        );
        assert_eq!(format_iso8601_millis(-1), "1969-12-31T23:59:59.999Z");
    }
}
