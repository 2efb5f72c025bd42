%% msgbench: the Erlang side of benchmarks/messaging.py.
%%
%% Workers:  erl -name w1@127.0.0.1 -setcookie C -noshell -pa EBIN -run msgbench serve
%%   register `sink` (counts {Seq, Binary} messages, tells the driver when it
%%   has the number it was told to expect), `echo` ({ping, From, X} -> {pong, X})
%%   and `fanout` (a node's local fan-out for the pub/sub figure, as
%%   Phoenix.PubSub does: one message per node, sent on to the local subscribers).
%% Driver:   erl -name d@127.0.0.1 ... -run msgbench drive W1 W2 W3 N N10K M B
%%   prints one JSON line per figure and halts.
-module(msgbench).

-export([serve/0, drive/1]).
-export([init/1, handle_call/3, handle_cast/2]).
-behaviour(gen_server).

serve() ->
    start_services(),
    io:format("{\"event\":\"ready\"}~n").

start_services() ->
    register(sink, spawn(fun sink_idle/0)),
    register(echo, spawn(fun echo/0)),
    {ok, _} = gen_server:start({local, echo_call}, ?MODULE, [], []),
    register(fanout, spawn(fun() -> fanout([], 0, undefined) end)).

sink_idle() ->
    receive
        {expect, N, From} -> sink_count(N, From, 0)
    end.

sink_count(N, From, N) ->
    From ! {done, N},
    sink_idle();
sink_count(N, From, C) ->
    receive
        {_Seq, _Bin} -> sink_count(N, From, C + 1)
    end.

echo() ->
    receive
        {ping, From, X} ->
            From ! {pong, X},
            echo()
    end.

fanout(Subs, Pending, Reporter) ->
    receive
        {setup, K, B, From} ->
            Self = self(),
            New = [spawn(fun() -> subscriber(B, 0, Self) end) || _ <- lists:seq(1, K)],
            From ! {ready, node()},
            fanout(New, K, From);
        {publish, Msg} ->
            [S ! Msg || S <- Subs],
            fanout(Subs, Pending, Reporter);
        sub_done when Pending =:= 1 ->
            Reporter ! {pubsub_done, node()},
            fanout([], 0, undefined);
        sub_done ->
            fanout(Subs, Pending - 1, Reporter)
    end.

subscriber(B, B, Fanout) ->
    Fanout ! sub_done;
subscriber(B, C, Fanout) ->
    receive
        {pub, _} -> subscriber(B, C + 1, Fanout)
    end.

drive([W1s, W2s, W3s, Ns, N10s, Ms, Bs]) ->
    Workers = [list_to_atom(W) || W <- [W1s, W2s, W3s]],
    [pong = net_adm:ping(W) || W <- Workers],
    [W1 | _] = Workers,
    start_services(),
    stream(W1, list_to_integer(Ns), binary:copy(<<"x">>, 100), "small"),
    stream(W1, list_to_integer(N10s), binary:copy(<<"x">>, 10240), "10k"),
    pingpong(W1, list_to_integer(Ms)),
    calls(W1, list_to_integer(Ms)),
    pubsub([node() | Workers], 250, list_to_integer(Bs)),
    erlang:halt(0).

now_us() -> erlang:monotonic_time(microsecond).

stream(W, N, Bin, Label) ->
    {sink, W} ! {expect, N, self()},
    io:format("{\"phase\":\"~s\"}~n", [Label]),
    T0 = now_us(),
    send_loop(W, N, Bin, 0),
    receive {done, N} -> ok end,
    Seconds = (now_us() - T0) / 1.0e6,
    io:format("{\"result\":\"~s\",\"count\":~b,\"seconds\":~f}~n", [Label, N, Seconds]).

send_loop(_, N, _, N) -> ok;
send_loop(W, N, Bin, I) ->
    {sink, W} ! {I, Bin},
    send_loop(W, N, Bin, I + 1).

pingpong(W, M) -> round_trips("rtt", M, fun(I) -> ping(W, I) end).

%% M round trips timed by Fun(I) (microseconds): median and p99 as one JSON line.
round_trips(Label, M, Fun) ->
    io:format("{\"phase\":\"~s\"}~n", [Label]),
    Times = lists:sort([Fun(I) || I <- lists:seq(1, M)]),
    Median = lists:nth(M div 2 + 1, Times),
    P99 = lists:nth(min(M, (M * 99) div 100 + 1), Times),
    io:format("{\"result\":\"~s\",\"count\":~b,\"median_us\":~b,\"p99_us\":~b}~n",
              [Label, M, Median, P99]).

ping(W, I) ->
    T0 = now_us(),
    {echo, W} ! {ping, self(), I},
    receive {pong, I} -> ok end,
    now_us() - T0.

%% gen_server:call: what skycluster's `call` does (a monitor, so that a node going
%% down ends the call at once, a timeout, a reply matched by reference).
init([]) -> {ok, nostate}.
handle_call(X, _From, State) -> {reply, X, State}.
handle_cast(_, State) -> {noreply, State}.

calls(W, M) -> round_trips("rtt_call", M, fun(I) -> call(W, I) end).

call(W, I) ->
    T0 = now_us(),
    I = gen_server:call({echo_call, W}, I, 5000),
    now_us() - T0.

pubsub(Nodes, K, B) ->
    [{fanout, N} ! {setup, K, B, self()} || N <- Nodes],
    [receive {ready, N} -> ok end || N <- Nodes],
    io:format("{\"phase\":\"pubsub\"}~n"),
    T0 = now_us(),
    [[{fanout, N} ! {publish, {pub, I}} || N <- Nodes] || I <- lists:seq(1, B)],
    [receive {pubsub_done, N} -> ok end || N <- Nodes],
    Seconds = (now_us() - T0) / 1.0e6,
    io:format("{\"result\":\"pubsub\",\"count\":~b,\"subscribers\":~b,\"seconds\":~f}~n",
              [B, K * length(Nodes), Seconds]).
