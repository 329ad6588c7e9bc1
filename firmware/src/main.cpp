// ESP32 sensor node: samples the press's sensors every interval and publishes the flat JSON
// the gateway decodes as `esp32-json`, over MQTT with TLS, at QoS 1. This file is only the
// board glue (serial console, NVS, LittleFS, Wi-Fi, TLS, MQTT, NTP, pins); the payload, the
// outbox and its flash journal, the settings and their console, the topics and the
// reconnect backoff are the portable core in lib/plantwatch_core, tested on the host.
#include <Arduino.h>
#include <LittleFS.h>
#include <MQTT.h>
#include <Preferences.h>
#include <WiFi.h>
#include <WiFiClientSecure.h>
#include <time.h>

#include <string>
#include <vector>

#include "plantwatch/backoff.h"
#include "plantwatch/journal.h"
#include "plantwatch/node_config.h"
#include "plantwatch/outbox.h"
#include "plantwatch/payload.h"
#include "plantwatch/topics.h"
#include "sensors.h"

// Build-time board settings (platformio.ini build_flags); nothing secret is compiled in.
#ifndef PW_BACKLOG_READINGS
#define PW_BACKLOG_READINGS 600  // 10 minutes at 1 Hz: 36 bytes each on flash, 56 in RAM
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
static_assert(PW_BACKLOG_READINGS >= 1 && PW_BACKLOG_READINGS <= 65535, "PW_BACKLOG_READINGS: 1..65535");

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

// ---- settings in NVS -------------------------------------------------------------------
constexpr const char* kNvsNamespace = "plantwatch";

plantwatch::NodeConfig load_config() {
  plantwatch::NodeConfig config;
  Preferences prefs;
  if (!prefs.begin(kNvsNamespace, true)) return config;  // never provisioned: the namespace does not exist
  for (const char* key : plantwatch::kConfigKeys) {
    if (!prefs.isKey(key)) continue;
    std::string value;
    if (std::string(key) == "ca_pem") {
      value.resize(prefs.getBytesLength(key));
      if (value.empty()) continue;
      prefs.getBytes(key, &value[0], value.size());
    } else {
      value = prefs.getString(key).c_str();
    }
    std::string error;
    if (!plantwatch::set_config(config, key, value, error)) Serial.printf("nvs: %s\n", error.c_str());
  }
  prefs.end();
  return config;
}

bool save_config(const plantwatch::NodeConfig& config) {
  Preferences prefs;
  if (!prefs.begin(kNvsNamespace, false)) return false;
  bool ok = true;
  for (const char* key : plantwatch::kConfigKeys) {
    if (std::string(key) == "ca_pem") {
      ok &= prefs.putBytes(key, config.ca_pem.data(), config.ca_pem.size()) == config.ca_pem.size();  // > NVS's 4000-byte strings
    } else if (std::string(key) == "mqtt_port") {
      ok &= prefs.putString(key, String(config.mqtt_port)) > 0;
    } else if (std::string(key) == "interval_ms") {
      ok &= prefs.putString(key, String(config.interval_ms)) > 0;
    } else {
      const std::string* value = key == std::string("device_id")       ? &config.device_id
                                 : key == std::string("area")          ? &config.area
                                 : key == std::string("wifi_ssid")     ? &config.wifi_ssid
                                 : key == std::string("wifi_password") ? &config.wifi_password
                                 : key == std::string("mqtt_host")     ? &config.mqtt_host
                                 : key == std::string("mqtt_username") ? &config.mqtt_username
                                 : key == std::string("mqtt_password") ? &config.mqtt_password
                                                                       : &config.ntp_server;
      // putString returns the bytes written: 0 for an empty value is not a failure.
      ok &= prefs.putString(key, value->c_str()) == value->size();
    }
  }
  prefs.end();
  return ok;
}

// ---- the outbox's journal on LittleFS --------------------------------------------------
constexpr const char* kJournalPath = "/outbox.bin";

class LittleFsStorage : public plantwatch::Storage {
 public:
  // Opens (creating, and zero-filling up to `size` bytes, which no record decodes from) the
  // journal file; false when the filesystem is not there (readings then wait in RAM only).
  bool open(std::size_t size) {
    if (!LittleFS.begin(true)) return false;  // formats a partition that was never LittleFS
    if (!LittleFS.exists(kJournalPath)) LittleFS.open(kJournalPath, FILE_WRITE).close();
    file_ = LittleFS.open(kJournalPath, "r+");
    if (!file_) return false;
    static const std::uint8_t zeros[64] = {};
    if (file_.size() < size && file_.seek(file_.size())) {
      for (std::size_t n = file_.size(); n < size; n += sizeof zeros) {
        file_.write(zeros, size - n < sizeof zeros ? size - n : sizeof zeros);
      }
      file_.flush();
    }
    return file_.size() >= size;
  }

  bool read(std::uint32_t offset, std::uint8_t* data, std::size_t size) override {
    return file_ && file_.seek(offset) && file_.read(data, size) == size;
  }

  bool write(std::uint32_t offset, const std::uint8_t* data, std::size_t size) override {
    if (!file_ || !file_.seek(offset) || file_.write(data, size) != size) return false;
    file_.flush();  // commits the littlefs file: after this a power cut keeps the write
    return true;
  }

 private:
  fs::File file_;
};

LittleFsStorage storage;
plantwatch::Journal journal(storage, PW_BACKLOG_READINGS);
plantwatch::Outbox outbox(journal);
plantwatch::Recovery recovery = plantwatch::Recovery::Fresh;

// ---- connectivity ----------------------------------------------------------------------
constexpr time_t kClockSetAfter = 1700000000;  // before this, NTP has not answered yet
constexpr std::uint32_t kReplayBudgetMs = 250;  // per loop pass, so sampling stays on time

// The running settings never change after setup(): the clients keep pointers into them.
// The console edits a copy, which a save writes to NVS for the next boot.
plantwatch::NodeConfig config;
plantwatch::NodeConfig edited;
bool provisioned = false;
WiFiClientSecure net;
MQTTClient mqtt(512);
plantwatch::Backoff backoff(500, 30000, [](std::uint32_t n) {
  return static_cast<std::uint32_t>(random(static_cast<long>(n) + 1));  // hardware RNG once Wi-Fi is up
});
std::string data_topic, status_topic;
std::uint32_t next_connect_ms = 0, next_sample_ms = 0, drops_reported = 0;
bool was_connected = false;

// millis() wraps after 49 days; compare by difference.
bool due(std::uint32_t now, std::uint32_t at) { return static_cast<std::int32_t>(now - at) >= 0; }

bool connect_mqtt() {
  // The broker's certificate dates are checked against the clock: wait for NTP.
  if (WiFi.status() != WL_CONNECTED || time(nullptr) < kClockSetAfter) return false;
  if (!mqtt.connect(config.device_id.c_str(), config.mqtt_username.c_str(), config.mqtt_password.c_str())) {
    char tls[96] = "";
    net.lastError(tls, sizeof tls);
    // returnCode is the CONNACK's: 4 bad user name or password, 5 not authorized.
    Serial.printf("mqtt: connect to %s:%u failed: error %d, CONNACK %d, TLS: %s\n", config.mqtt_host.c_str(),
                  config.mqtt_port, static_cast<int>(mqtt.lastError()), static_cast<int>(mqtt.returnCode()), tls);
    return false;
  }
  // The birth: retained, so the gateway (and anyone subscribing later) sees "online" until
  // the Will replaces it.
  mqtt.publish(status_topic.c_str(), plantwatch::kStatusOnline, true, 1);
  Serial.printf("mqtt: connected to %s:%u over TLS, %u readings waiting\n", config.mqtt_host.c_str(), config.mqtt_port,
                static_cast<unsigned>(outbox.size()));
  return true;
}

// Publishes waiting readings oldest first until the budget is spent. arduino-mqtt's QoS 1
// publish() returns once the PUBACK came (true) or the connection failed (false; it closes
// the connection, and the reading is resent with DUP after the reconnect).
void drain_outbox() {
  const std::uint32_t start = millis();
  while (mqtt.connected() && millis() - start < kReplayBudgetMs) {
    const plantwatch::OutboxEntry* e = outbox.next();
    if (e == nullptr) return;
    const std::uint32_t seq = e->seq;
    const std::string payload = plantwatch::build_payload(config.device_id, e->reading);
    if (e->dup()) mqtt.prepareDuplicate(e->packet_id);
    const bool acked = mqtt.publish(data_topic.c_str(), payload.c_str(), static_cast<int>(payload.size()), false, 1);
    const std::uint16_t packet_id = mqtt.lastPacketID();
    outbox.sent(seq, packet_id);
    if (!acked) return;
    outbox.acked(packet_id);
  }
}

void print_status() {
  Serial.printf("device %s, wifi %s, mqtt %s, outbox %u/%u waiting (%u in flight), %u dropped when full, "
                "%u flash write errors, journal %s at boot\n",
                config.device_id.c_str(), WiFi.status() == WL_CONNECTED ? "up" : "down",
                mqtt.connected() ? "connected" : "disconnected", static_cast<unsigned>(outbox.size()),
                static_cast<unsigned>(outbox.capacity()), static_cast<unsigned>(outbox.in_flight()),
                static_cast<unsigned>(outbox.dropped()), static_cast<unsigned>(outbox.storage_errors()),
                plantwatch::recovery_name(recovery));
}

// ---- serial console (provisioning) -----------------------------------------------------
plantwatch::Console console;
std::string console_line;
bool console_overflow = false;

void poll_console() {
  while (Serial.available() > 0) {
    const char c = static_cast<char>(Serial.read());
    if (c != '\n') {
      if (console_line.size() < 512) console_line += c;
      else console_overflow = true;
      continue;
    }
    if (console_overflow) {
      Serial.println("line longer than 512 characters ignored");
    } else {
      const plantwatch::Console::Reply reply = console.line(console_line, edited);
      if (!reply.text.empty()) Serial.println(reply.text.c_str());
      switch (reply.action) {
        case plantwatch::Console::Action::Save:
          Serial.println(save_config(edited) ? "saved to NVS; reboot to apply" : "NVS write failed: not saved");
          break;
        case plantwatch::Console::Action::Erase: {
          Preferences prefs;
          const bool ok = prefs.begin(kNvsNamespace, false) && prefs.clear();
          prefs.end();
          Serial.println(ok ? "settings erased from NVS; reboot to apply" : "NVS erase failed");
          break;
        }
        case plantwatch::Console::Action::Status:
          print_status();
          break;
        case plantwatch::Console::Action::Reboot:
          Serial.flush();
          ESP.restart();
          break;
        case plantwatch::Console::Action::None:
          break;
      }
    }
    console_line.clear();
    console_overflow = false;
  }
}

}  // namespace

void setup() {
  Serial.begin(115200);
  config = load_config();
  edited = config;
  const std::vector<std::string> problems = plantwatch::config_problems(config);
  if (!problems.empty()) {
    // Not provisioned (or incompletely): only the console runs. See README.md, "Provision".
    Serial.println("plantwatch node: not provisioned; type help. Missing or invalid:");
    for (const std::string& p : problems) Serial.printf("  %s\n", p.c_str());
    return;
  }
  provisioned = true;
  std::string prefix;
  plantwatch::topic_prefix(config.area, config.device_id, prefix);  // valid: config_problems checked it
  data_topic = plantwatch::data_topic(prefix);
  status_topic = plantwatch::status_topic(prefix);

  if (!storage.open(plantwatch::kHeaderSize * 2 + plantwatch::kRecordSize * PW_BACKLOG_READINGS)) {
    Serial.println("littlefs: cannot open the journal: readings will wait in RAM only");
  }
  recovery = outbox.restore();
  Serial.printf("journal: %s, %u readings to replay, %u dropped when full so far\n", plantwatch::recovery_name(recovery),
                static_cast<unsigned>(outbox.size()), static_cast<unsigned>(outbox.dropped()));
  drops_reported = outbox.dropped();

  for (node::Sensor* s : sensors) s->begin();  // a sensor that fails here is retried by read()

  WiFi.mode(WIFI_STA);
  WiFi.setAutoReconnect(true);
  WiFi.begin(config.wifi_ssid.c_str(), config.wifi_password.empty() ? nullptr : config.wifi_password.c_str());
  configTime(0, 0, config.ntp_server.c_str());  // UTC; the gateway refuses readings far from its clock

  // The pinned CA: the broker's chain must end in it and its certificate must name
  // mqtt_host (WiFiClientSecure verifies both when a CA is set).
  net.setCACert(config.ca_pem.c_str());
  mqtt.begin(config.mqtt_host.c_str(), config.mqtt_port, net);
  mqtt.setWill(status_topic.c_str(), plantwatch::kStatusOffline, true, 1);
  mqtt.setKeepAlive(15);
  mqtt.setCleanSession(false);  // the broker keeps the session, so a DUP resend means what it says
  mqtt.setTimeout(2000);        // for the CONNACK and each PUBACK
  next_sample_ms = millis();
}

void loop() {
  poll_console();
  if (!provisioned) return;

  const std::uint32_t ms = millis();
  const bool connected = mqtt.connected();
  if (was_connected && !connected) {
    outbox.disconnected();  // in flight -> resend with DUP; everything waiting -> flash
    Serial.printf("mqtt: connection lost, %u readings waiting (on flash)\n", static_cast<unsigned>(outbox.size()));
  }
  was_connected = connected;
  if (!connected && due(ms, next_connect_ms)) {
    if (connect_mqtt()) {
      backoff.reset();
      was_connected = true;
    } else {
      next_connect_ms = ms + backoff.next_delay_ms();
    }
  }
  mqtt.loop();

  // Sample on a fixed cadence once NTP has set the clock; every reading goes through the
  // outbox, so a reading taken during an outage and one taken now travel the same way.
  const time_t now = time(nullptr);
  if (due(ms, next_sample_ms) && now > kClockSetAfter) {
    next_sample_ms += config.interval_ms;
    if (due(ms, next_sample_ms)) next_sample_ms = ms + config.interval_ms;  // fell behind: skip, don't burst
    outbox.push(read_sensors(static_cast<std::int64_t>(now)), mqtt.connected());
    if (outbox.dropped() != drops_reported && outbox.dropped() % 60 == 1) {
      Serial.printf("outbox full: %u oldest readings dropped so far\n", static_cast<unsigned>(outbox.dropped()));
    }
    drops_reported = outbox.dropped();
  }

  drain_outbox();
}
