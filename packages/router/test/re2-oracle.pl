#!/usr/bin/perl
# The RE2 oracle for re2-interop.test.ts: real RE2 (the system libre2 through Debian's
# libre-engine-re2-perl), one process for a whole test file, speaking JSON lines.
#
#   in:  {"pattern": "...", "inputs": ["...", ...]}
#   out: {"ok": true, "matches": [true, false, ...]}   whole-string match of each input (RE2::FullMatch)
#        {"ok": false, "error": "..."}                 RE2 refuses the pattern
#
# Patterns and inputs are decoded to character strings and upgraded, so RE2 compiles in UTF-8 mode
# and matches code points (a pattern not flagged UTF-8 would be compiled as Latin-1).
#
# The module compiles `(?-ims:PATTERN)`, with -strict => 1 dying instead of falling back to Perl's
# engine. Two consequences of that wrapper are undone here, so that the verdict is RE2's on the
# pattern as written:
# - a pattern ending inside \Q... would swallow the wrapper's `)`: `\E` is appended, which RE2 reads
#   the same way (\Q runs to the end of the pattern or to \E);
# - a pattern with a `)` closing the wrapper early and a `(` opened later (`a)|(b`) would compile:
#   such patterns are refused here, as RE2 refuses any unbalanced parenthesis.
# The whole-string match is `\A(?:PATTERN)\z` matched anywhere, which is RE2::FullMatch: \A and \z
# hold only at the ends of the text whatever (?m) says, and flags set inside (?:...) end with it.
use strict;
use warnings;
use JSON::PP ();
use re::engine::RE2 -strict => 1;

binmode STDIN, ":raw";
binmode STDOUT, ":raw";
$| = 1;
my $json = JSON::PP->new->utf8->canonical;

# Where the pattern ends in RE2's lexing: 'q' inside an unterminated \Q, 'bad' if a `)` has no `(`
# before it, else ''. Only parentheses outside classes, escapes and \Q...\E count.
sub scan {
  my ($p) = @_;
  my @c = split //, $p;
  my ($i, $depth) = (0, 0);
  while ($i < @c) {
    my $c = $c[$i];
    if ($c eq '\\') {
      if ($i + 1 < @c && $c[$i + 1] eq 'Q') {
        $i += 2;
        while (1) {
          return 'q' if $i >= @c;
          if ($c[$i] eq '\\' && $i + 1 < @c && $c[$i + 1] eq 'E') { $i += 2; last; }
          $i++;
        }
        next;
      }
      $i += 2;
      next;
    }
    if ($c eq '[') {
      $i++;
      $i++ if $i < @c && $c[$i] eq '^';
      $i++ if $i < @c && $c[$i] eq ']';
      while ($i < @c && $c[$i] ne ']') {
        if ($c[$i] eq '\\') { $i += 2; next; }
        if ($c[$i] eq '[' && $i + 1 < @c && $c[$i + 1] eq ':') {
          my $end = index($p, ':]', $i + 2);
          # index counts characters too: $p is a character string.
          if ($end >= 0) { $i = $end + 2; next; }
        }
        $i++;
      }
      $i++;
      next;
    }
    $depth++ if $c eq '(';
    if ($c eq ')') {
      $depth--;
      return 'bad' if $depth < 0;
    }
    $i++;
  }
  return '';
}

sub reply { print $json->encode($_[0]), "\n"; }

while (my $line = <STDIN>) {
  my $req = $json->decode($line);
  my $p = $req->{pattern};
  my $where = scan($p);
  if ($where eq 'bad') {
    reply({ ok => JSON::PP::false, error => "unexpected ) (checked by the oracle)" });
    next;
  }
  $p .= '\\E' if $where eq 'q';
  utf8::upgrade($p);
  my $re = eval { qr/$p/ };
  if (!defined $re) {
    my $error = $@;
    $error =~ s/ at \S+ line \d+.*//s;
    reply({ ok => JSON::PP::false, error => $error });
    next;
  }
  die "not compiled by RE2: $p\n" unless $re->isa('re::engine::RE2');
  my $whole = "\\A(?:$p)\\z";
  utf8::upgrade($whole);
  my $full = qr/$whole/;
  my @matches;
  for my $input (@{ $req->{inputs} }) {
    utf8::upgrade($input);
    push @matches, ($input =~ $full) ? JSON::PP::true : JSON::PP::false;
  }
  reply({ ok => JSON::PP::true, matches => \@matches });
}
