//! The relay on its own, driven on loopback socket pairs, for both ways of
//! moving bytes: copy (recv/send) and splice.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::*;
use socks4d::relay::{self, End, Mode, Summary};

const MODES: [Mode; 2] = [Mode::Copy, Mode::Splice];

/// Starts a relay between two fresh pairs on a thread. Returns the client
/// end, the destination end, and the relay's result.
fn start(mode: Mode, pending: &'static [u8], idle: Option<Duration>) -> (TcpStream, TcpStream, JoinHandle<Summary>) {
    let (client, client_side) = socket_pair();
    let (dest, dest_side) = socket_pair();
    client_side.set_nonblocking(true).unwrap();
    dest_side.set_nonblocking(true).unwrap();
    let h = thread::spawn(move || relay::run_with(mode, client_side, dest_side, pending, idle));
    (client, dest, h)
}

/// Writes `data` to `w` and shuts its sending side, on a thread.
fn send_all(mut w: TcpStream, data: Vec<u8>) -> JoinHandle<()> {
    thread::spawn(move || {
        w.write_all(&data).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    })
}

#[test]
fn tens_of_megabytes_each_way_at_once() {
    for mode in MODES {
        let (mut client, mut dest, h) = start(mode, b"pending-", None);
        let up = payload(24 << 20, 1);
        let down = payload(20 << 20, 2);
        let w1 = send_all(client.try_clone().unwrap(), up.clone());
        let w2 = send_all(dest.try_clone().unwrap(), down.clone());
        let got_down = read_all(&mut client);
        let got_up = read_all(&mut dest);
        w1.join().unwrap();
        w2.join().unwrap();
        let mut want_up = b"pending-".to_vec();
        want_up.extend_from_slice(&up);
        assert_eq!(checksum(&got_up), checksum(&want_up), "{mode:?} up");
        assert_eq!(checksum(&got_down), checksum(&down), "{mode:?} down");
        let s = h.join().unwrap();
        assert_eq!((s.up, s.down), (want_up.len() as u64, down.len() as u64), "{mode:?}");
    }
}

#[test]
fn half_close_from_the_client_keeps_the_download_going() {
    for mode in MODES {
        let (mut client, mut dest, h) = start(mode, b"", None);
        client.write_all(b"request").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(&mut dest), b"request", "{mode:?}");
        let down = payload(8 << 20, 3);
        let w = send_all(dest.try_clone().unwrap(), down.clone());
        assert_eq!(checksum(&read_all(&mut client)), checksum(&down), "{mode:?}");
        w.join().unwrap();
        let s = h.join().unwrap();
        assert_eq!(s.end, End::ClientEof, "{mode:?}");
    }
}

#[test]
fn half_close_from_the_destination_keeps_the_upload_going() {
    for mode in MODES {
        let (mut client, mut dest, h) = start(mode, b"", None);
        dest.write_all(b"banner").unwrap();
        dest.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(&mut client), b"banner", "{mode:?}");
        let up = payload(8 << 20, 4);
        let w = send_all(client.try_clone().unwrap(), up.clone());
        assert_eq!(checksum(&read_all(&mut dest)), checksum(&up), "{mode:?}");
        w.join().unwrap();
        let s = h.join().unwrap();
        assert_eq!(s.end, End::DestEof, "{mode:?}");
        assert_eq!((s.up, s.down), (up.len() as u64, 6));
    }
}

#[test]
fn idle_timeout_ends_a_quiet_relay() {
    for mode in MODES {
        let (mut client, _dest, h) = start(mode, b"", Some(Duration::from_millis(500)));
        let t = Instant::now();
        let s = h.join().unwrap();
        assert_eq!(s.end, End::IdleTimeout, "{mode:?}");
        assert!(t.elapsed() >= Duration::from_millis(450) && t.elapsed() < Duration::from_secs(5));
        assert!(closed(&mut client));
    }
}

#[test]
fn traffic_keeps_the_idle_timer_at_bay() {
    for mode in MODES {
        let (mut client, mut dest, h) = start(mode, b"", Some(Duration::from_millis(600)));
        for _ in 0..6 {
            client.write_all(b"tick").unwrap();
            let mut b = [0u8; 4];
            dest.read_exact(&mut b).unwrap();
            thread::sleep(Duration::from_millis(200));
        }
        client.shutdown(Shutdown::Write).unwrap();
        dest.shutdown(Shutdown::Write).unwrap();
        let s = h.join().unwrap();
        assert_ne!(s.end, End::IdleTimeout, "{mode:?}");
        assert_eq!(s.up, 24);
    }
}

#[test]
fn a_reset_is_passed_on_as_a_reset() {
    for mode in MODES {
        let (mut client, dest, h) = start(mode, b"", None);
        let linger = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        nix::sys::socket::setsockopt(&dest.as_fd(), nix::sys::socket::sockopt::Linger, &linger).unwrap();
        drop(dest);
        let s = h.join().unwrap();
        assert!(matches!(s.end, End::DestError(_)), "{mode:?}: {:?}", s.end);
        let mut buf = Vec::new();
        assert!(
            client.read_to_end(&mut buf).is_err(),
            "{mode:?}: client got a clean EOF"
        );
    }
}
