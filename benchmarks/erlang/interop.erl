%% interop: the Erlang side of benchmarks/erlang_interop.py.
%%
%% Worker:  erl -name e1@127.0.0.1 -setcookie C -noshell -pa EBIN -run interop serve
%%   registers `sink` (counts {Seq, Binary} messages; told {expect, N, ReplyTo}, it
%%   sends {done, N} to ReplyTo once it has N), `echo` ({ping, ReplyTo, X} ->
%%   ReplyTo ! {pong, X}), `blaster` ({blast, Target, N, Size}: N messages
%%   {Seq, Binary} to Target) and `pinger` ({rtt, Target, M, ReplyTo}: M round trips
%%   to Target's echo, timed here; {rtt, Median, P99} in microseconds to ReplyTo).
%%   ReplyTo and Target are anything `!` takes: a pid or {Name, Node}.
%% Driver:  erl -name e2@127.0.0.1 ... -run interop drive E1 N M
%%   Erlang -> Erlang: one-way N messages to E1's sink, M round trips to its echo;
%%   prints one JSON line and halts.
-module(interop).

-export([serve/0, drive/1]).

serve() ->
    register(sink, spawn(fun sink_idle/0)),
    register(echo, spawn(fun echo/0)),
    register(blaster, spawn(fun blaster/0)),
    register(pinger, spawn(fun pinger/0)),
    io:format("{\"event\":\"ready\"}~n").

sink_idle() ->
    receive
        {expect, N, ReplyTo} -> sink_count(N, ReplyTo, 0)
    end.

sink_count(N, ReplyTo, N) ->
    ReplyTo ! {done, N},
    sink_idle();
sink_count(N, ReplyTo, C) ->
    receive
        {_Seq, _Bin} -> sink_count(N, ReplyTo, C + 1)
    end.

echo() ->
    receive
        {ping, ReplyTo, X} ->
            ReplyTo ! {pong, X},
            echo()
    end.

blaster() ->
    receive
        {blast, Target, N, Size} ->
            Bin = binary:copy(<<"x">>, Size),
            [Target ! {Seq, Bin} || Seq <- lists:seq(1, N)],
            blaster()
    end.

pinger() ->
    receive
        {rtt, Target, M, ReplyTo} ->
            %% a process has one registered name: the pongs go to a helper's
            spawn(fun() ->
                register(pong_box, self()),
                Times = [round_trip(Target, I) || I <- lists:seq(1, M)],
                {Median, P99} = percentiles(Times),
                ReplyTo ! {rtt, Median, P99}
            end),
            pinger()
    end.

round_trip(Target, I) ->
    T0 = erlang:monotonic_time(microsecond),
    Target ! {ping, {pong_box, node()}, I},
    receive
        {pong, I} -> erlang:monotonic_time(microsecond) - T0
    end.

percentiles(Times) ->
    Sorted = lists:sort(Times),
    Len = length(Sorted),
    {lists:nth(max(1, Len div 2), Sorted), lists:nth(max(1, (Len * 99) div 100), Sorted)}.

drive([E1s, Ns, Ms]) ->
    E1 = list_to_atom(E1s),
    N = list_to_integer(Ns),
    M = list_to_integer(Ms),
    pong = net_adm:ping(E1),
    Bin = binary:copy(<<"x">>, 100),
    {sink, E1} ! {expect, N, self()},
    T0 = erlang:monotonic_time(microsecond),
    [{sink, E1} ! {Seq, Bin} || Seq <- lists:seq(1, N)],
    receive {done, N} -> ok end,
    Took = erlang:monotonic_time(microsecond) - T0,
    register(pong_box, self()),
    Times = [round_trip({echo, E1}, I) || I <- lists:seq(1, M)],
    {Median, P99} = percentiles(Times),
    io:format("{\"one_way_per_s\":~p,\"rtt_median_us\":~p,\"rtt_p99_us\":~p}~n",
              [N * 1000000 / Took, Median, P99]),
    halt().
