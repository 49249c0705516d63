package backend

import (
	"slices"
	"testing"
)

const bridgeReport = `bridge0: flags=1008843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST,LOWER_UP> metric 0 mtu 1400
	options=0
	ether 58:9c:fc:10:ff:a8
	id 00:00:00:00:00:00 priority 32768 hellotime 2 fwddelay 15
	member: pt4851d6684f15 flags=143<LEARNING,DISCOVER,AUTOEDGE,AUTOPTP>
	        ifmaxaddr 0 port 5 priority 128 path cost 2000000
	member: em0 flags=143<LEARNING,DISCOVER,AUTOEDGE,AUTOPTP>
	groups: bridge
	nd6 options=9<PERFORMNUD,IFDISABLED>
`

const tapReport = `pt4851d6684f15: flags=8802<BROADCAST,SIMPLEX,MULTICAST> metric 0 mtu 1500
	description: petrel/v1 vm=team:vm net=service0 mac=02:00:00:00:00:01
	options=80000<LINKSTATE>
	ether fe:00:00:00:00:01
	groups: tap
	media: Ethernet 1000baseT <full-duplex>
	status: no carrier
`

func TestParseIfconfig(t *testing.T) {
	br, err := parseIfconfig(bridgeReport)
	if err != nil {
		t.Fatal(err)
	}
	if br.name != "bridge0" || br.mtu != 1400 || !br.up() || br.ether != "58:9c:fc:10:ff:a8" || !br.inGroup("bridge") || br.inGroup("tap") ||
		!slices.Equal(br.members, []string{"pt4851d6684f15", "em0"}) || br.description != "" {
		t.Fatalf("bridge parsed as %+v", br)
	}
	tp, err := parseIfconfig(tapReport)
	if err != nil {
		t.Fatal(err)
	}
	if tp.name != "pt4851d6684f15" || tp.mtu != 1500 || tp.up() || !tp.inGroup("tap") || tp.description != "petrel/v1 vm=team:vm net=service0 mac=02:00:00:00:00:01" {
		t.Fatalf("tap parsed as %+v", tp)
	}
	for _, bad := range []string{"", "garbage", "x: flags=1<UP> mtu big"} {
		if got, err := parseIfconfig(bad); err == nil {
			t.Errorf("parseIfconfig(%q) = %+v; want an error", bad, got)
		}
	}
}

func TestNetstatCounters(t *testing.T) {
	out := `Name      Mtu Network       Address              Ipkts Ierrs Idrop     Ibytes    Opkts Oerrs     Obytes  Coll  Drop
pt4851d6684f15  1500 <Link#5>      fe:00:00:00:00:01       12     1     2       3456        7     3        890     0     4
pt4851d6684f15     - fe80::%pt4851 fe80::fc00:ff:fe00       0     -     -          0        1     -         72     -     -
`
	c, err := netstatCounters(out, "pt4851d6684f15")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"Ipkts": 12, "Ierrs": 1, "Idrop": 2, "Ibytes": 3456, "Opkts": 7, "Oerrs": 3, "Obytes": 890, "Drop": 4}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("%s = %d; want %d (all: %v)", k, c[k], v, c)
		}
	}
	// No address column: counters still line up from the right.
	noAddr := `Name Mtu Network Address Ipkts Ierrs Idrop Ibytes Opkts Oerrs Obytes Coll Drop
tap9 1500 <Link#9> 5 0 0 300 6 0 400 0 0
`
	if c, err := netstatCounters(noAddr, "tap9"); err != nil || c["Ipkts"] != 5 || c["Obytes"] != 400 {
		t.Errorf("without address: %v, %v", c, err)
	}
	if _, err := netstatCounters(out, "other0"); err == nil {
		t.Error("missing interface not reported")
	}
	if _, err := netstatCounters("Name Mtu\n", "x"); err == nil {
		t.Error("empty output not reported")
	}
}
