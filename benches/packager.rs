//! Packager benchmarks: rendering a full LL-HLS media playlist, and packaging one part
//! (segmenter push plus both playlist renders, as the live path does per part).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use estuary::packager::{
    playlist::{render_media, MediaRender, RenditionReport},
    Chunk, ChunkKind, PackagerConfig, Segmenter,
};

fn filled() -> (Segmenter, u64) {
    let mut s = Segmenter::new(PackagerConfig {
        part_target: Duration::from_millis(200),
        part_hold_back: Duration::from_millis(600),
        segment_target: Duration::from_secs(1),
        max_segment: Duration::from_secs(2),
        window_segments: 12,
        part_segments: 3,
    });
    let data = Bytes::from(vec![0u8; 40_000]);
    s.push(Chunk {
        kind: ChunkKind::Init,
        data: data.clone(),
        duration: Duration::ZERO,
        independent: false,
        pdt: SystemTime::UNIX_EPOCH,
    })
    .unwrap();
    let mut n = 0;
    for _ in 0..(12 * 5 + 3) {
        push(&mut s, &data, n);
        n += 1;
    }
    (s, n)
}

fn push(s: &mut Segmenter, data: &Bytes, n: u64) {
    let kind = if n.is_multiple_of(5) {
        ChunkKind::SegmentStart
    } else {
        ChunkKind::PartStart
    };
    s.push(Chunk {
        kind,
        data: data.clone(),
        duration: Duration::from_millis(200),
        independent: kind == ChunkKind::SegmentStart,
        pdt: SystemTime::UNIX_EPOCH + Duration::from_millis(200 * n),
    })
    .unwrap();
}

fn reports() -> Vec<RenditionReport> {
    ["audio", "720p", "480p"]
        .iter()
        .map(|r| RenditionReport {
            uri: format!("../{r}/index.m3u8"),
            last_msn: 12,
            last_part: 2,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let (s, _) = filled();
    let reports = reports();
    c.bench_function("render_media_playlist_12_segments", |b| {
        b.iter(|| {
            render_media(
                black_box(&s),
                &reports,
                &[],
                MediaRender {
                    skip: false,
                    live: true,
                },
            )
        })
    });
    c.bench_function("render_delta_playlist_12_segments", |b| {
        b.iter(|| {
            render_media(
                black_box(&s),
                &reports,
                &[],
                MediaRender {
                    skip: true,
                    live: true,
                },
            )
        })
    });
    let (mut s, mut n) = filled();
    let data = Bytes::from(vec![0u8; 40_000]);
    c.bench_function("package_one_part_and_render", |b| {
        b.iter(|| {
            push(&mut s, &data, n);
            n += 1;
            let full = render_media(
                &s,
                &reports,
                &[],
                MediaRender {
                    skip: false,
                    live: true,
                },
            );
            let delta = render_media(
                &s,
                &reports,
                &[],
                MediaRender {
                    skip: true,
                    live: true,
                },
            );
            black_box((full, delta))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
