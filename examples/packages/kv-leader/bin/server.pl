#!/usr/bin/perl
# kv-leader's server: answers GET / with the response file named in its config (role.toml),
# read on every request so a re-rendered role shows at once; anything else is 404 or 400.
# Usage: server.pl CONFIG_FILE   (lines `key = value`: listen, port, response)
use strict;
use warnings;
use IO::Socket::INET;

$| = 1;
my $conf_file = shift @ARGV or die "usage: server.pl CONFIG_FILE\n";
open(my $fh, '<', $conf_file) or die "kv-leader: cannot read $conf_file: $!\n";
my %conf = map { /^\s*(\w+)\s*=\s*(.*?)\s*$/ ? ($1, $2) : () } grep { !/^\s*(#|$)/ } <$fh>;
close $fh;
for my $key (qw(listen port response)) {
    die "kv-leader: no $key in $conf_file\n" unless defined $conf{$key};
}
die "kv-leader: port $conf{port} is not a port number\n" unless $conf{port} =~ /^\d+$/ && $conf{port} < 65536;

my $server = IO::Socket::INET->new(
    LocalAddr => $conf{listen}, LocalPort => $conf{port}, Proto => 'tcp', Listen => 16, ReuseAddr => 1,
) or die "kv-leader: cannot listen on $conf{listen}:$conf{port}: $!\n";
$SIG{TERM} = $SIG{INT} = sub { print "kv-leader: stopping\n"; exit 0 };
$SIG{PIPE} = 'IGNORE';
print "kv-leader: listening on $conf{listen}:" . $server->sockport . "\n";

while (my $client = $server->accept) {
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 5;
        my $line = <$client> // '';
        while (my $header = <$client>) { last if $header =~ /^\r?\n$/ }
        alarm 0;
        my ($status, $body) = ('400 Bad Request', "bad request\n");
        if ($line =~ m{^GET (\S+) HTTP/1\.[01]\r?\n$}) {
            ($status, $body) = ('404 Not Found', "not found\n");
            if ($1 eq '/' && open(my $r, '<', $conf{response})) {
                local $/;
                ($status, $body) = ('200 OK', scalar(<$r>) // '');
                close $r;
            } elsif ($1 eq '/') {
                ($status, $body) = ('500 Internal Server Error', "cannot read the role file\n");
            }
        }
        print $client "HTTP/1.0 $status\r\nContent-Type: text/plain; charset=utf-8\r\n"
            . "Content-Length: " . length($body) . "\r\nConnection: close\r\n\r\n" . $body;
    };
    close $client;
}
