//! Where frames come from. Offline capture files for now.

pub mod pcap_file;
