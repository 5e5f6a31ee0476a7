//! MessagePack encode and decode of representative state payloads with the crate's
//! pure-Rust writer and reader (`data::msgpack`, `data::ext`): no Python in the loop.
//!
//! The native codec walks Python objects and calls the same writer functions; here a small
//! `Value` tree built in Rust stands in for them. `encode` writes each entry of a payload
//! into a fresh buffer (as the codec does, one buffer per field). `decode` reads every
//! token and checks what the native decoder checks before it builds Python objects (UTF-8
//! of strings, ext payload layouts, nesting depth); building those objects is not measured.
//!
//! Run: `cargo bench --bench codec` (in `oprc-py/`). Throughput is in encoded bytes.

// The allocator of the extension (oprc-py/src/lib.rs), so the figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use oprc_core::codec::ext::{self, Clock, Delta, ObjectId, MAX_DEPTH};
use oprc_core::codec::msgpack::{self as mp, err, DecodeError, Reader, Token};

/// A value the way the codec sees one: MessagePack types plus the ext types benchmarked.
enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    DateTime(Clock),
    Date(Clock),
    TimeDelta(Delta),
    Uuid(u128),
    Ref(&'static str, u32, u64),
}

fn ext_value(out: &mut Vec<u8>, code: i8, payload: &[u8]) -> Result<(), DecodeError> {
    mp::write_ext_header(out, payload.len(), code)?;
    out.extend_from_slice(payload);
    Ok(())
}

fn encode(v: &Value, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    match v {
        Value::Nil => mp::write_nil(out),
        Value::Bool(b) => mp::write_bool(out, *b),
        Value::Int(i) => mp::write_i64(out, *i),
        Value::Uint(u) => mp::write_u64(out, *u),
        Value::Float(f) => mp::write_f64(out, *f),
        Value::Str(s) => mp::write_str(out, s.as_bytes())?,
        Value::Bin(b) => {
            mp::write_bin_header(out, b.len())?;
            out.extend_from_slice(b);
        }
        Value::Array(items) => {
            mp::write_array_header(out, items.len())?;
            for item in items {
                encode(item, out)?;
            }
        }
        Value::Map(pairs) => {
            mp::write_map_header(out, pairs.len())?;
            for (k, v) in pairs {
                encode(k, out)?;
                encode(v, out)?;
            }
        }
        Value::DateTime(c) => {
            let mut p = Vec::with_capacity(19);
            ext::put_datetime(&mut p, c);
            ext_value(out, ext::EXT_DATETIME, &p)?;
        }
        Value::Date(c) => {
            let mut p = Vec::with_capacity(4);
            ext::put_date(&mut p, c);
            ext_value(out, ext::EXT_DATE, &p)?;
        }
        Value::TimeDelta(d) => {
            let mut p = Vec::with_capacity(12);
            ext::put_timedelta(&mut p, d);
            ext_value(out, ext::EXT_TIMEDELTA, &p)?;
        }
        Value::Uuid(n) => ext_value(out, ext::EXT_UUID, &n.to_be_bytes())?,
        Value::Ref(cls, pid, oid) => {
            let mut p = Vec::with_capacity(cls.len() + 16);
            ext::put_ref(&mut p, cls, *pid, ObjectId::Num(*oid))?;
            ext_value(out, ext::EXT_REF, &p)?;
        }
    }
    Ok(())
}

/// Reads one value and everything in it; returns a checksum so nothing is optimized away.
fn decode(r: &mut Reader<'_>, depth: usize) -> Result<u64, DecodeError> {
    if depth > MAX_DEPTH {
        return err("nesting too deep");
    }
    Ok(match r.read()? {
        Token::Nil => 0,
        Token::Bool(b) => u64::from(b),
        Token::Uint(u) => u,
        Token::Int(i) => i as u64,
        Token::Float(f) => f.to_bits(),
        Token::Str(s) => match std::str::from_utf8(s) {
            Ok(s) => s.len() as u64,
            Err(_) => return err("invalid UTF-8"),
        },
        Token::Bin(b) => b.len() as u64,
        Token::Array(n) => {
            let mut sum = n as u64;
            for _ in 0..n {
                sum = sum.wrapping_add(decode(r, depth + 1)?);
            }
            sum
        }
        Token::Map(n) => {
            let mut sum = n as u64;
            for _ in 0..2 * n {
                sum = sum.wrapping_add(decode(r, depth + 1)?);
            }
            sum
        }
        Token::Ext(code, p) => match code {
            ext::EXT_DATETIME => u64::from(ext::get_datetime(p)?.microsecond),
            ext::EXT_DATE => u64::from(ext::get_date(p)?.day),
            ext::EXT_TIMEDELTA => ext::get_timedelta(p)?.seconds as u64,
            ext::EXT_UUID => ext::get_uuid(p)? as u64,
            ext::EXT_REF => u64::from(ext::get_ref(p)?.1),
            _ => return err(format!("ext {code} is not in this benchmark")),
        },
    })
}

/// The payloads: name and entries (each entry is one field, encoded on its own).
fn payloads() -> Vec<(&'static str, Vec<Value>)> {
    let scalars = vec![
        Value::Nil,
        Value::Bool(true),
        Value::Int(7),
        Value::Int(-200),
        Value::Uint(u64::MAX),
        Value::Int(1_700_000_000_000),
        Value::Float(3.25),
        Value::Str("hello".into()),
    ];
    // 48 keys: str -> int for even keys, str -> 24-character str for odd ones (~1 KB).
    let map_1k = vec![Value::Map(
        (0..48)
            .map(|i| {
                let v = if i % 2 == 0 {
                    Value::Int(i * 1_000_003)
                } else {
                    Value::Str(format!("value-{i:02}-abcdefghijklmnop"))
                };
                (Value::Str(format!("key_{i:02}")), v)
            })
            .collect(),
    )];
    let array_100 = vec![Value::Array(
        (0..100)
            .map(|i| match i % 6 {
                0 => Value::Int(i),
                1 => Value::Int(-i * 1_000),
                2 => Value::Float(i as f64 / 3.0),
                3 => Value::Str(format!("item {i}")),
                4 => Value::Bool(i % 4 == 0),
                _ => Value::Nil,
            })
            .collect(),
    )];
    let bin_64k = vec![Value::Bin(
        (0..65_536u32).map(|i| (i % 251) as u8).collect(),
    )];
    let when = Clock {
        year: 2026,
        month: 11,
        day: 21,
        hour: 21,
        minute: 54,
        second: 6,
        microsecond: 123_456,
        offset_us: Some(3_600_000_000),
    };
    let ext = vec![
        Value::DateTime(when),
        Value::DateTime(Clock {
            offset_us: None,
            ..when
        }),
        Value::Date(when),
        Value::TimeDelta(Delta {
            days: 3,
            seconds: 3_600,
            microseconds: 250,
        }),
        Value::Uuid(0x1234_5678_9abc_4def_8123_4567_89ab_cdef),
        Value::Ref("bench.Sensor", 0, 42),
    ];
    vec![
        ("scalars", scalars),
        ("map_1k", map_1k),
        ("array_100", array_100),
        ("bin_64k", bin_64k),
        ("ext", ext),
    ]
}

fn encode_entries(entries: &[Value]) -> Vec<Vec<u8>> {
    entries
        .iter()
        .map(|v| {
            let mut out = Vec::new();
            encode(v, &mut out).expect("encodable");
            out
        })
        .collect()
}

fn bench_codec(c: &mut Criterion) {
    for (name, entries) in payloads() {
        let encoded = encode_entries(&entries);
        let nbytes: usize = encoded.iter().map(Vec::len).sum();
        for e in &encoded {
            let mut r = Reader::new(e);
            decode(&mut r, 0).expect("decodable");
            assert!(r.is_done(), "{name}: trailing bytes");
        }
        let mut g = c.benchmark_group(format!("codec/{name}"));
        g.throughput(Throughput::Bytes(nbytes as u64));
        g.bench_function("encode", |b| b.iter(|| encode_entries(black_box(&entries))));
        g.bench_function("decode", |b| {
            b.iter(|| {
                let mut sum = 0u64;
                for e in black_box(&encoded) {
                    let mut r = Reader::new(e);
                    sum = sum.wrapping_add(decode(&mut r, 0).expect("decodable"));
                }
                sum
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = bench_codec
}
criterion_main!(benches);
