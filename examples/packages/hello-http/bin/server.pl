#!/usr/bin/perl
# hello-http's server: answers GET / (and HEAD /) with the contents of the response file named
# in its config, read on every request, so a re-rendered config shows at once. Core modules
# only (perl-base). Usage: server.pl CONFIG_FILE   (lines `key = value`: listen, port, response)
use strict;
use warnings;
use IO::Socket::INET;

$| = 1;
my $conf_file = shift @ARGV or die "usage: server.pl CONFIG_FILE\n";
my %conf;
open(my $fh, '<', $conf_file) or die "hello-http: cannot read $conf_file: $!\n";
while (my $line = <$fh>) {
    next if $line =~ /^\s*(#|$)/;
    $conf{$1} = $2 if $line =~ /^\s*([A-Za-z_]+)\s*=\s*"?(.*?)"?\s*$/;
}
close $fh;
my $port = $conf{port} // die "hello-http: no port in $conf_file\n";
# Port 0 takes a free port (the log line says which).
die "hello-http: port $port is not a port number\n" unless $port =~ /^\d+$/ && $port < 65536;
my $listen = $conf{listen} // '0.0.0.0';
my $response = $conf{response} // die "hello-http: no response file in $conf_file\n";

my $server = IO::Socket::INET->new(
    LocalAddr => $listen, LocalPort => $port, Proto => 'tcp', Listen => 16, ReuseAddr => 1,
) or die "hello-http: cannot listen on $listen:$port: $!\n";
$SIG{TERM} = $SIG{INT} = sub { print "hello-http: stopping\n"; exit 0 };
$SIG{PIPE} = 'IGNORE';
print "hello-http: listening on $listen:" . $server->sockport . "\n";

while (my $client = $server->accept) {
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 5;
        my $request = <$client> // '';
        while (my $header = <$client>) { last if $header =~ /^\r?\n$/ }
        alarm 0;
        my ($method, $path) = $request =~ m{^(GET|HEAD) (\S+) HTTP/1\.[01]\r?\n$};
        my ($status, $body);
        if (!defined $method) {
            ($status, $body) = ('400 Bad Request', "bad request\n");
        } elsif ($path ne '/') {
            ($status, $body) = ('404 Not Found', "not found\n");
        } elsif (open(my $r, '<', $response)) {
            local $/;
            ($status, $body) = ('200 OK', scalar(<$r>) // '');
            close $r;
        } else {
            ($status, $body) = ('500 Internal Server Error', "cannot read the response file\n");
        }
        print $client "HTTP/1.0 $status\r\nContent-Type: text/plain; charset=utf-8\r\n"
            . "Content-Length: " . length($body) . "\r\nConnection: close\r\n\r\n";
        print $client $body unless defined $method && $method eq 'HEAD';
        print "hello-http: " . ($method // '-') . " " . ($path // '-') . " -> $status\n";
    };
    close $client;
}
