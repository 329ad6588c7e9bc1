// ESP32 sensor node: samples the press's sensors every PW_INTERVAL_MS and publishes the
// flat JSON the gateway decodes as `esp32-json`. This file is only the board glue (Wi-Fi,
// MQTT, NTP, pins); the payload, the outage buffer, the topics and the reconnect backoff
// are the portable core in lib/plantwatch_core, tested on the host (see README.md).
#include <Arduino.h>
#include <PubSubClient.h>
#include <WiFi.h>
#include <time.h>

#include <string>

#include "plantwatch/backoff.h"
#include "plantwatch/payload.h"
#include "plantwatch/ring_buffer.h"
#include "plantwatch/topics.h"
#if __has_include("secrets.h")
#include "secrets.h"
#else
#error "src/secrets.h is missing: cp src/secrets.example.h src/secrets.h and fill it in"
#endif
#include "sensors.h"

// Defaults for what secrets.h may leave out.
#ifndef PW_NTP_SERVER
#define PW_NTP_SERVER "pool.ntp.org"
#endif
#ifndef PW_INTERVAL_MS
#define PW_INTERVAL_MS 1000
#endif
#ifndef PW_BACKLOG_READINGS
#define PW_BACKLOG_READINGS 600  // 10 minutes at 1 Hz, 24 bytes each
#endif
#ifndef PW_PIN_DS18B20
#define PW_PIN_DS18B20 4
#endif
#ifndef PW_PIN_ACS712
#define PW_PIN_ACS712 34
#endif
#ifndef PW_PIN_BATTERY
#define PW_PIN_BATTERY 35
#endif

namespace {

using plantwatch::Reading;

// ---- sensors, in payload order (plantwatch::Field) -------------------------------------
#ifdef PW_SIMULATED_SENSORS
node::Simulated temperature(45.0f, 5.0f, 60000), vibration(1.5f, 0.5f, 7000), current(12.0f, 2.0f, 20000),
    battery(3.7f, 0.05f, 600000);
#else
node::Ds18b20 temperature(PW_PIN_DS18B20);
node::Adxl345 vibration;
node::Acs712 current(PW_PIN_ACS712, 1667.0f, 44.0f);  // ACS712-30A (2.5 V, 66 mV/A) behind a 2:3 divider
node::BatteryDivider battery(PW_PIN_BATTERY, 2.0f);   // 1:1 divider
#endif
node::Sensor* const sensors[plantwatch::kFieldCount] = {&temperature, &vibration, &current, &battery};

Reading read_sensors(std::int64_t unix_time) {
  Reading r;
  r.unix_time = unix_time;
  for (std::size_t i = 0; i < plantwatch::kFieldCount; ++i) {
    float value = 0;
    const bool ok = sensors[i]->read(value);
    r.values[i] = {value, ok};
  }
  return r;
}

// ---- connectivity ----------------------------------------------------------------------
constexpr time_t kClockSetAfter = 1700000000;  // before this, NTP has not answered yet
constexpr std::size_t kReplayPerLoop = 20;      // keep sampling on time while a backlog drains

WiFiClient net;
PubSubClient mqtt(net);
plantwatch::RingBuffer<Reading, PW_BACKLOG_READINGS> backlog;
plantwatch::Backoff backoff(500, 30000, [](std::uint32_t n) {
  return static_cast<std::uint32_t>(random(static_cast<long>(n) + 1));  // hardware RNG once Wi-Fi is up
});
std::string data_topic, status_topic;
std::uint32_t next_connect_ms = 0, next_sample_ms = 0, drops_reported = 0;

// millis() wraps after 49 days; compare by difference.
bool due(std::uint32_t now, std::uint32_t at) { return static_cast<std::int32_t>(now - at) >= 0; }

bool connect_mqtt() {
  if (WiFi.status() != WL_CONNECTED) return false;
  // Last Will: the broker publishes "offline" (retained) if the node vanishes.
  if (!mqtt.connect(PW_DEVICE_ID, PW_MQTT_USER, PW_MQTT_PASSWORD, status_topic.c_str(), 1, true, "offline")) {
    Serial.printf("mqtt: connect failed, state %d\n", mqtt.state());
    return false;
  }
  mqtt.publish(status_topic.c_str(), "online", true);
  Serial.printf("mqtt: connected, %u readings waiting\n", static_cast<unsigned>(backlog.size()));
  return true;
}

bool publish(const Reading& r) {
  const std::string payload = plantwatch::build_payload(PW_DEVICE_ID, r);
  return mqtt.publish(data_topic.c_str(), payload.c_str());  // QoS 0: all PubSubClient publishes
}

}  // namespace

void setup() {
  Serial.begin(115200);
  std::string prefix;
  if (!plantwatch::topic_prefix(PW_AREA, PW_DEVICE_ID, prefix)) {
    Serial.println("PW_AREA and PW_DEVICE_ID must be non-empty and free of '/', '+' and '#'");
    for (;;) delay(1000);
  }
  data_topic = plantwatch::data_topic(prefix);
  status_topic = plantwatch::status_topic(prefix);

  for (node::Sensor* s : sensors) s->begin();  // a sensor that fails here is retried by read()

  WiFi.mode(WIFI_STA);
  WiFi.setAutoReconnect(true);
  WiFi.begin(PW_WIFI_SSID, PW_WIFI_PASSWORD);
  configTime(0, 0, PW_NTP_SERVER);  // UTC; the gateway refuses readings far from its clock
  mqtt.setServer(PW_MQTT_HOST, PW_MQTT_PORT);
  mqtt.setBufferSize(512);
  mqtt.setKeepAlive(15);
  next_sample_ms = millis();
}

void loop() {
  const std::uint32_t ms = millis();
  if (!mqtt.connected() && due(ms, next_connect_ms)) {
    if (connect_mqtt()) {
      backoff.reset();
    } else {
      next_connect_ms = ms + backoff.next_delay_ms();
    }
  }
  mqtt.loop();

  // Sample on a fixed cadence once NTP has set the clock; every reading goes through the
  // backlog, so a reading taken during an outage and one taken now travel the same way.
  const time_t now = time(nullptr);
  if (due(ms, next_sample_ms) && now > kClockSetAfter) {
    next_sample_ms += PW_INTERVAL_MS;
    if (due(ms, next_sample_ms)) next_sample_ms = ms + PW_INTERVAL_MS;  // fell behind: skip, don't burst
    backlog.push(read_sensors(static_cast<std::int64_t>(now)));
    if (backlog.dropped() != drops_reported && backlog.dropped() % 60 == 1) {
      Serial.printf("backlog full: %u oldest readings dropped so far\n", static_cast<unsigned>(backlog.dropped()));
    }
    drops_reported = backlog.dropped();
  }

  // Oldest first; a failed publish stays at the front for the next pass.
  if (mqtt.connected()) plantwatch::replay(backlog, publish, kReplayPerLoop);
}
