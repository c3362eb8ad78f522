//! The compact little-endian encoding of the states training and metric aggregates send
//! from workers to the coordinator: what a site sends is exactly these bytes (plus Arrow's
//! framing), so the per-site byte counts in a training report are measurable and small.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::common::{DataFusionError, Result};

/// The non-null values of an aggregate's single binary state column (what `merge_batch`
/// receives from the partial aggregates).
pub fn binary_states(states: &[ArrayRef]) -> impl Iterator<Item = &[u8]> {
    let column = states.first().and_then(|c| c.as_binary_opt::<i32>());
    column.into_iter().flat_map(|c| {
        (0..c.len())
            .filter(|i| c.is_valid(*i))
            .map(move |i| c.value(i))
    })
}

#[derive(Debug, Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.bytes.extend_from_slice(s.as_bytes());
        self
    }

    pub fn f64s(&mut self, values: &[f64]) -> &mut Self {
        self.u64(values.len() as u64);
        for v in values {
            self.f64(*v);
        }
        self
    }

    pub fn u64s(&mut self, values: &[u64]) -> &mut Self {
        self.u64(values.len() as u64);
        for v in values {
            self.u64(*v);
        }
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads what [`Writer`] wrote; a short or malformed buffer is an error naming `what`.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(DataFusionError::Internal(format!(
                "a {} state ended early: wanted {n} more byte(s), {} left",
                self.what,
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub fn u64(&mut self) -> Result<u64> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(word))
    }

    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_bits(self.u64()?))
    }

    fn len(&mut self, item_bytes: usize) -> Result<usize> {
        let n = self.u64()? as usize;
        if n.saturating_mul(item_bytes) > self.bytes.len() {
            return Err(DataFusionError::Internal(format!(
                "a {} state announces {n} item(s) but holds {} byte(s)",
                self.what,
                self.bytes.len()
            )));
        }
        Ok(n)
    }

    pub fn str(&mut self) -> Result<String> {
        let n = self.len(1)?;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|e| DataFusionError::Internal(format!("a {} state: {e}", self.what)))
    }

    pub fn f64s(&mut self) -> Result<Vec<f64>> {
        let n = self.len(8)?;
        (0..n).map(|_| self.f64()).collect()
    }

    pub fn u64s(&mut self) -> Result<Vec<u64>> {
        let n = self.len(8)?;
        (0..n).map(|_| self.u64()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_truncation_is_an_error() -> Result<()> {
        let mut w = Writer::default();
        w.u64(7).f64(-1.5).str("w1").f64s(&[1.0, 2.0]).u64s(&[3]);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes, "test");
        assert_eq!(r.u64()?, 7);
        assert_eq!(r.f64()?, -1.5);
        assert_eq!(r.str()?, "w1");
        assert_eq!(r.f64s()?, vec![1.0, 2.0]);
        assert_eq!(r.u64s()?, vec![3]);
        assert!(r.is_empty());
        let mut short = Reader::new(&bytes[..bytes.len() - 3], "test");
        short.u64()?;
        short.f64()?;
        short.str()?;
        short.f64s()?;
        assert!(short.u64s().unwrap_err().to_string().contains("test state"));
        Ok(())
    }
}
