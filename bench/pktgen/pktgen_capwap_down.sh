#!/bin/bash
# Downstream load for ferry with the kernel's pktgen: 802.1Q client-VLAN
# frames addressed to many stations, sent into ferry's client-side port.
# In the style of the kernel's samples/pktgen scripts (one pktgen device per
# thread, each thread pinned to its CPU and, with QUEUE_MAP_CPU, its TX
# queue), self-contained so it runs from this repository.
#
# ferry forwards a frame only to a station it knows: run the upstream TRex
# profile first (ferry learns every station and each AP's port), or list the
# stations in the configuration. Stations are MACs counted up from -m, the
# same scheme as the TRex profile (02:5b:00:00:00:00, ...:01, ...).
#
#   bench/pktgen/pktgen_capwap_down.sh -i ens1f1 -c 4096 -t 4 -s 64
#   bench/pktgen/pktgen_capwap_down.sh -D ...   # print the pktgen commands only
#
# Needs CONFIG_NET_PKTGEN (modprobe pktgen) and root.
set -euo pipefail

usage() {
    cat <<USAGE
usage: $0 -i DEV [options]
  -i DEV     interface towards ferry's client side (required)
  -m MAC     first station MAC               (default 02:5b:00:00:00:00)
  -c N       stations, counted up from -m    (default 4096)
  -v VID     client VLAN                     (default 200)
  -p PCP     802.1p priority                 (default 0)
  -M MAC     source MAC: the clients' gateway (default 02:c0:00:00:00:01)
  -d IP      destination IPv4 of the client frames (default 198.18.128.1)
  -s BYTES   frame size without FCS, 64..1500 (default 64)
  -t N       threads (CPUs and TX queues)    (default 1)
  -f N       first CPU                       (default 0)
  -n N       frames per thread, 0 = until ^C (default 10000000)
  -r PPS     rate per thread, 0 = full speed (default 0)
  -b N       burst (xmit_more) per skb       (default 32)
  -D         dry run: print every pktgen write, touch nothing
USAGE
    exit "${1:-2}"
}

DEV="" MAC="02:5b:00:00:00:00" COUNT=4096 VID=200 PCP=0 SRC_MAC="02:c0:00:00:00:01"
DST_IP="198.18.128.1" SIZE=64 THREADS=1 FIRST=0 FRAMES=10000000 RATE=0 BURST=32 DRY=0
while getopts "i:m:c:v:p:M:d:s:t:f:n:r:b:Dh" o; do
    case $o in
        i) DEV=$OPTARG ;; m) MAC=$OPTARG ;; c) COUNT=$OPTARG ;; v) VID=$OPTARG ;;
        p) PCP=$OPTARG ;; M) SRC_MAC=$OPTARG ;; d) DST_IP=$OPTARG ;; s) SIZE=$OPTARG ;;
        t) THREADS=$OPTARG ;; f) FIRST=$OPTARG ;; n) FRAMES=$OPTARG ;; r) RATE=$OPTARG ;;
        b) BURST=$OPTARG ;; D) DRY=1 ;; h) usage 0 ;; *) usage ;;
    esac
done
err() { echo "$0: error: $*" >&2; exit 1; }
[ -n "$DEV" ] || { echo "$0: error: -i DEV is required" >&2; usage; }
for v in COUNT VID PCP SIZE THREADS FIRST FRAMES RATE BURST; do
    [[ ${!v} =~ ^[0-9]+$ ]] || err "-$v must be a number, not '${!v}'"
done
[ "$COUNT" -ge 1 ] || err "-c must be at least 1"
[ "$VID" -ge 1 ] && [ "$VID" -le 4094 ] || err "-v must be 1..4094"
[ "$PCP" -le 7 ] || err "-p must be 0..7"
[ "$SIZE" -ge 64 ] && [ "$SIZE" -le 1500 ] || err "-s must be 64..1500"
[ "$THREADS" -ge 1 ] || err "-t must be at least 1"
PROC=/proc/net/pktgen
if [ $DRY = 0 ]; then
    [ "$(id -u)" = 0 ] || err "run as root"
    [ -d $PROC ] || modprobe pktgen 2>/dev/null || true
    [ -d $PROC ] || err "no $PROC: this kernel has no pktgen (CONFIG_NET_PKTGEN)"
    [ -e "/sys/class/net/$DEV" ] || err "no interface $DEV"
fi

# One write to a pktgen control file; pktgen answers in the file itself.
pgset() {
    local file=$PROC/$1 cmd=$2
    if [ $DRY = 1 ]; then
        echo "pgset $1 $cmd"
        return
    fi
    echo "$cmd" >"$file"
    # kpktgend_* and pgctrl have no Result line; devices must say OK.
    if [[ $1 == *@* ]] && ! grep -q "Result: OK:" "$file"; then
        grep "Result:" "$file" >&2
        err "pktgen refused '$cmd' on $1"
    fi
}

pgset pgctrl reset
for ((i = 0; i < THREADS; i++)); do
    cpu=$((FIRST + i))
    dev="$DEV@$cpu"
    pgset "kpktgend_$cpu" rem_device_all
    pgset "kpktgend_$cpu" "add_device $dev"
    pgset "$dev" "count $FRAMES"
    # A fresh skb per frame: with clone_skb N, pktgen would send the same
    # station N times before it counts the MAC on.
    pgset "$dev" "clone_skb 0"
    pgset "$dev" "burst $BURST"
    pgset "$dev" "flag QUEUE_MAP_CPU"
    # pktgen's size is the frame without FCS, VLAN tag included.
    pgset "$dev" "pkt_size $SIZE"
    if [ "$RATE" -gt 0 ]; then pgset "$dev" "ratep $RATE"; else pgset "$dev" "delay 0"; fi
    pgset "$dev" "dst_mac $MAC"
    pgset "$dev" "dst_mac_count $COUNT"
    pgset "$dev" "src_mac $SRC_MAC"
    pgset "$dev" "vlan_id $VID"
    pgset "$dev" "vlan_p $PCP"
    pgset "$dev" "vlan_cfi 0"
    pgset "$dev" "dst $DST_IP"
    # Each thread its own client address: distinct flows for the stack's
    # receive side in the lab; ferry keys on the station MAC only.
    pgset "$dev" "src_min 198.18.$((100 + i % 100)).1"
    pgset "$dev" "src_max 198.18.$((100 + i % 100)).254"
    pgset "$dev" "udp_src_min 9"
    pgset "$dev" "udp_src_max 9"
    pgset "$dev" "udp_dst_min 9"
    pgset "$dev" "udp_dst_max 9"
done

if [ $DRY = 1 ]; then
    pgset pgctrl start
    exit 0
fi
echo "pktgen: $THREADS thread(s) on $DEV, $COUNT stations from $MAC in VLAN $VID, $SIZE-byte frames" >&2
trap 'echo stop >$PROC/pgctrl' INT
echo start >$PROC/pgctrl || true
for ((i = 0; i < THREADS; i++)); do
    dev="$DEV@$((FIRST + i))"
    echo "--- $dev"
    grep -A2 "Result:" "$PROC/$dev"
done
