// Command producer publishes one order request to orderstream and waits for its result.
//
// REDIS_URL (default redis://localhost:6379/0) names the Redis; ORDERSTREAM_KEY_ID and
// ORDERSTREAM_KEY_SECRET, when both are set, sign the request. It prints the result JSON
// and exits 0 once the result came, 1 when none came within the timeout, 2 on an error.
package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// order is a place request of the wire contract. Amounts are decimal strings: a float
// would not carry 0.01 exactly.
type order struct {
	ClientOrderID string `json:"client_order_id"`
	Account       string `json:"account"`
	Symbol        string `json:"symbol"`
	Side          string `json:"side"`
	Type          string `json:"type"`
	Quantity      string `json:"quantity"`
	IssuedAt      int64  `json:"issued_at,omitempty"` // epoch ms: a signed request must be fresh
}

func env(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func main() { os.Exit(run(context.Background())) }

func run(ctx context.Context) int {
	opts, err := redis.ParseURL(env("REDIS_URL", "redis://localhost:6379/0"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "REDIS_URL:", err)
		return 2
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	prefix := env("ORDERSTREAM_PREFIX", "orders")
	timeoutMs, err := strconv.Atoi(env("RESULT_TIMEOUT_MS", "30000"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "RESULT_TIMEOUT_MS:", err)
		return 2
	}
	timeout := time.Duration(timeoutMs) * time.Millisecond

	random := make([]byte, 5)
	if _, err := rand.Read(random); err != nil {
		panic(err)
	}
	req := order{
		ClientOrderID: "go-" + strconv.FormatInt(time.Now().UnixMilli(), 36) + "-" + hex.EncodeToString(random),
		Account:       "default", Symbol: "BTCUSDT", Side: "buy", Type: "market", Quantity: "0.01",
	}
	keyID, secret := os.Getenv("ORDERSTREAM_KEY_ID"), os.Getenv("ORDERSTREAM_KEY_SECRET")
	signing := keyID != "" && secret != ""
	if signing {
		req.IssuedAt = time.Now().UnixMilli()
	}
	data, err := json.Marshal(req)
	if err != nil {
		panic(err)
	}
	fields := []string{"data", string(data)}
	if signing {
		// The signature covers the exact bytes written to the field data.
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(data)
		fields = append(fields, "key_id", keyID, "sig", hex.EncodeToString(mac.Sum(nil)))
	}
	requestID, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: prefix + ":pending", Values: fields}).Result()
	if err != nil {
		fmt.Fprintln(os.Stderr, "XADD:", err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "published %s as %s\n", req.ClientOrderID, requestID)

	// A result's entry id comes from the same Redis clock, after the request's; read from
	// 5 s before it in case that clock stepped back.
	ms, _ := strconv.ParseInt(strings.SplitN(requestID, "-", 2)[0], 10, 64)
	start := "0-0"
	if ms > 5000 {
		start = strconv.FormatInt(ms-5000, 10) + "-0"
	}
	completed, failed := prefix+":completed", prefix+":failed"
	cursors := map[string]string{completed: start, failed: start}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		// Block 0 would wait for ever: at least 1 ms, at most 1 s at a time.
		block := time.Until(deadline).Truncate(time.Millisecond)
		if block > time.Second {
			block = time.Second
		} else if block < time.Millisecond {
			block = time.Millisecond
		}
		reply, err := rdb.XRead(ctx, &redis.XReadArgs{
			Streams: []string{completed, failed, cursors[completed], cursors[failed]},
			Count:   1000, Block: block,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			fmt.Fprintln(os.Stderr, "XREAD:", err)
			return 2
		}
		for _, stream := range reply {
			for _, entry := range stream.Messages {
				cursors[stream.Stream] = entry.ID
				if entry.Values["request_id"] == requestID {
					fmt.Println(entry.Values["data"])
					return 0
				}
			}
		}
	}
	fmt.Fprintf(os.Stderr, "no result for %s within %d ms\n", requestID, timeoutMs)
	return 1
}
